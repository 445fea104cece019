#!/usr/bin/env bash
# What the control plane costs at the relay peak, measured with both
# settings running at the same time, so that whatever else the machine does
# falls on both alike:
#   admin  the admin server on, /metrics scraped every second and one event
#          stream of every delivery-log record open all the while (curl);
#   none   `--admin ""`: no admin server at all.
# Each spate runs in a cgroup of its own allowed QUOTA percent of one CPU
# (default 50; cgroup v1 or v2 cpu controller), so each is the bottleneck
# of its own relay (smtp-source into spate into smtp-sink, reused
# connections, fdatasync before every 250) and its peak is its quota over
# its CPU per message; the admin server's work is paid from the admin
# spate's quota. The load tools and the curls run outside the cgroups.
# A round starts both sources together and times each relay until its sink
# has MESSAGES messages; the two settings swap ports and start order every
# round. Prints each round's throughputs and ratio, and the median ratio;
# the CSV goes to OUT (default perf/results/admin-overhead-together-<date>.csv).
#
#   perf/admin-overhead-together.sh [MESSAGES] [SESSIONS] [SIZE] [ROUNDS] [CORES]
#   perf/admin-overhead-together.sh 30000 20 4096 10 2
#
# Needs root (cgroups, smtp-sink -u) and Debian's postfix (smtp-source,
# smtp-sink), curl.
set -euo pipefail
cd "$(dirname "$0")/.."
messages=${1:-30000}; sessions=${2:-20}; size=${3:-4096}; rounds=${4:-10}; cores=${5:-2}
quota=${QUOTA:-50}
watch=${WATCH-metrics events}
out=${OUT:-perf/results/admin-overhead-together-$(date +%Y-%m-%d).csv}
cargo build --release --quiet
bin=$PWD/target/release/spate
work=$(mktemp -d -p "$PWD/target" admin-together.XXXXXX)
admin=127.0.0.1:25380

# A cgroup for each setting, allowed $quota% of one CPU in periods of
# 10 ms (fine-grained, so that a throttled spate pauses briefly). They are
# made afresh every round: two cgroups' periods keep the phase they started
# with, and a phase that happens to favour one setting would otherwise
# favour it in every round.
declare -A cgroup
period=10000
make_cgroups() { # ROUND
  local s
  for s in admin none; do
    if [ -f /sys/fs/cgroup/cgroup.controllers ]; then # v2
      echo +cpu >/sys/fs/cgroup/cgroup.subtree_control
      cgroup[$s]=/sys/fs/cgroup/spate-$s-$$-$1
      mkdir "${cgroup[$s]}"; echo "$((quota * period / 100)) $period" >"${cgroup[$s]}/cpu.max"
    else # v1
      cgroup[$s]=/sys/fs/cgroup/cpu/spate-$s-$$-$1
      mkdir "${cgroup[$s]}"
      echo $period >"${cgroup[$s]}/cpu.cfs_period_us"; echo $((quota * period / 100)) >"${cgroup[$s]}/cpu.cfs_quota_us"
    fi
  done
}
remove_cgroups() {
  [ -n "${cgroup[admin]:-}" ] && rmdir "${cgroup[admin]}" "${cgroup[none]}" 2>/dev/null || true
}
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  remove_cgroups
  rm -rf "$work"
}
trap cleanup EXIT

# start_spate SETTING PORT_BASE: spate in the setting's cgroup, relaying
# from PORT_BASE+2 to a sink on PORT_BASE+1. Sets pid[SETTING].
declare -A pid
start_spate() {
  local s=$1 base=$2 dir=$work/$1
  rm -rf "$dir"; mkdir -p "$dir"
  local flags=(--admin "")
  [ "$s" = admin ] && flags=(--admin "$admin")
  # The subshell joins the cgroup, then becomes spate.
  (echo $BASHPID >"${cgroup[$s]}/cgroup.procs"
   exec "$bin" serve --cores "$cores" --listen "127.0.0.1:$((base + 2))" --smarthost "127.0.0.1:$((base + 1))" \
     --dns 127.0.0.1:9 --spool "$dir/spool" --log-dir "$dir/log" "${flags[@]}" 2>"$dir/spate.txt") &
  pid[$s]=$!
  until grep -q "spate: ready" "$dir/spate.txt" 2>/dev/null; do sleep 0.05; done
}

# The admin setting's clients (WATCH, default "metrics events"): a scrape
# a second, and STREAMS (default 1) event streams (written to files;
# EVENTS_QUERY filters them, e.g. "?kind=PermanentFailure").
start_watchers() {
  if [[ " $watch " == *" metrics "* ]]; then
    (while kill -0 "${pid[admin]}" 2>/dev/null; do curl -s -o /dev/null "http://$admin/metrics"; sleep 1; done) &
  fi
  if [[ " $watch " == *" events "* ]]; then
    local i
    for i in $(seq "${STREAMS:-1}"); do
      rm -f "$work/events-$i.txt"
      curl -sN -o "$work/events-$i.txt" "http://$admin/api/v1/events${EVENTS_QUERY:-}" &
    done
    # A stream's first line, ": subscribed", comes once every core has it.
    for i in $(seq "${STREAMS:-1}"); do
      until [ -s "$work/events-$i.txt" ]; do sleep 0.05; done
    done
  fi
}

cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"; }
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }

echo "round,setting,seconds,msgs_per_sec,cpu_us_per_msg" >"$out"
echo "machine: $(nproc) CPUs, $(uname -r); $("$bin" --version); quota ${quota}% of a CPU each; cores $cores; admin watched by: ${watch:-nothing} (${STREAMS:-1} event streams)"
echo "messages=$messages sessions=$sessions size=$size rounds=$rounds"
ratios=()
for round in $(seq "$rounds"); do
  if [ $((round % 2)) -eq 1 ]; then order=(admin none); else order=(none admin); fi
  declare -A base=([${order[0]}]=25310 [${order[1]}]=25320)
  make_cgroups "$round"
  for s in "${order[@]}"; do
    rm -f "$work/$s.end"
    smtp-sink -u nobody -M "$messages" "127.0.0.1:$((base[$s] + 1))" 1024 >/dev/null 2>&1 &
    echo $! >"$work/$s.sink"
    start_spate "$s" "${base[$s]}"
  done
  start_watchers
  start=$(date +%s.%N)
  for s in "${order[@]}"; do
    (smtp-source -s "$sessions" -m "$messages" -l "$size" -d -f s@perf.test -t r@perf.test \
       "127.0.0.1:$((base[$s] + 2))" >/dev/null 2>&1 || true) &
  done
  for s in "${order[@]}"; do
    (sink=$(cat "$work/$s.sink")
     while kill -0 "$sink" 2>/dev/null; do sleep 0.01; done
     date +%s.%N >"$work/$s.end.tmp"; mv "$work/$s.end.tmp" "$work/$s.end") &
  done
  wait_ends=0
  until [ -f "$work/admin.end" ] && [ -f "$work/none.end" ]; do
    sleep 0.1; wait_ends=$((wait_ends + 1))
    [ "$wait_ends" -lt 6000 ] || { echo "perf/admin-overhead-together.sh: a sink never got all $messages messages" >&2; exit 1; }
  done
  declare -A secs cpu
  for s in admin none; do
    secs[$s]=$(echo "$(cat "$work/$s.end") - $start" | bc -l)
    cpu[$s]=$(cpu_secs "${pid[$s]}")
    kill -TERM "${pid[$s]}"
  done
  wait 2>/dev/null || true
  remove_cgroups
  for s in admin none; do
    printf '%d,%s,%.4f,%.1f,%.1f\n' "$round" "$s" "${secs[$s]}" "$(echo "$messages / ${secs[$s]}" | bc -l)" \
      "$(echo "${cpu[$s]} * 1000000 / $messages" | bc -l)" >>"$out"
  done
  ratio=$(echo "${secs[none]} / ${secs[admin]}" | bc -l)
  ratios+=("$(printf '%.3f' "$ratio")")
  printf 'round %2d (%s started first): admin %6.0f msgs/s %5.1f us/msg, none %6.0f msgs/s %5.1f us/msg, admin/none %.3f\n' \
    "$round" "${order[0]}" "$(echo "$messages / ${secs[admin]}" | bc -l)" "$(echo "${cpu[admin]} * 1000000 / $messages" | bc -l)" \
    "$(echo "$messages / ${secs[none]}" | bc -l)" "$(echo "${cpu[none]} * 1000000 / $messages" | bc -l)" "$ratio"
done
echo "median admin/none throughput over $rounds rounds: $(median "${ratios[@]}")  (all: ${ratios[*]})"
# The mean ratio with a 95% interval (normal approximation, 1.96 standard
# errors): the target is met with confidence when the interval's low end is
# at or above it.
printf '%s\n' "${ratios[@]}" | awk '{ s += $1; q += $1 * $1; n++ }
  END { m = s / n; sd = sqrt((q - n * m * m) / (n - 1)); e = 1.96 * sd / sqrt(n)
        printf "mean admin/none throughput %.3f, 95%% interval %.3f to %.3f (sd %.3f, %d rounds)\n", m, m - e, m + e, sd, n }' 
echo "raw runs: $out"
