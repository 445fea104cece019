#!/usr/bin/env bash
# Two spate settings, A and B, measured at the same time, so that whatever
# else the machine does falls on both alike. On a shared machine this sees
# differences of a percent or two that runs taken one after the other
# cannot (perf/results/2026-12-04-admin-overhead.md).
#
# Each spate runs in a cgroup of its own allowed QUOTA percent of one CPU
# (default 50; cgroup v1 or v2 cpu controller; periods of 10 ms), so each
# is the bottleneck of its own relay: smtp-source (SESSIONS sessions,
# MESSAGES messages of SIZE bytes) into `spate serve --cores CORES` into its
# own smtp-sink, fdatasync before every 250. Its peak is then its quota
# over its CPU per message. The load tools and the admin clients run
# outside the cgroups. A round starts both sources together and times each
# relay until its sink has every message; the settings swap ports and start
# order every round, and the cgroups are made afresh. Prints each round,
# the median A/B throughput ratio and its mean with a 95% interval; the CSV
# goes to OUT (default perf/results/together-<date>.csv).
#
# Each setting X (A or B) takes:
#   LABEL_X  its name in the output (default a, b)
#   BIN_X    the spate binary (default the release build of this checkout)
#   ARGS_X   more `spate serve` flags
#   MODE_X   reuse (smtp-source -d, the default) or new (a new connection
#            per message)
#   ADMIN_X  1 turns its admin server on (otherwise `--admin ""`)
#   WATCH_X  its admin clients, with ADMIN_X=1: "metrics" (a scrape a
#            second), "events" (STREAMS event streams, default 1, filtered by
#            EVENTS_QUERY, e.g. "?kind=PermanentFailure")
#
#   perf/together.sh [MESSAGES] [SESSIONS] [SIZE] [ROUNDS] [CORES]
#   BIN_A=target/release/spate BIN_B=/tmp/spate-old perf/together.sh 30000 20 4096 16 2
#
# Needs root (cgroups, smtp-sink -u), Debian's postfix (smtp-source,
# smtp-sink) and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
messages=${1:-30000}; sessions=${2:-20}; size=${3:-4096}; rounds=${4:-10}; cores=${5:-2}
quota=${QUOTA:-50}
out=${OUT:-perf/results/together-$(date +%Y-%m-%d).csv}
if [ -z "${BIN_A:-}" ] || [ -z "${BIN_B:-}" ]; then cargo build --release --quiet; fi
declare -A label bin args mode admin_on watch admin_addr
for x in a b; do
  X=${x^^}
  var=LABEL_$X; label[$x]=${!var:-$x}
  var=BIN_$X; bin[$x]=${!var:-$PWD/target/release/spate}
  var=ARGS_$X; args[$x]=${!var:-}
  var=MODE_$X; mode[$x]=${!var:-reuse}
  var=ADMIN_$X; admin_on[$x]=${!var:-}
  var=WATCH_$X; watch[$x]=${!var:-}
  case ${mode[$x]} in reuse | new) ;; *) echo "perf/together.sh: MODE_$X is reuse or new" >&2; exit 2 ;; esac
done
admin_addr=([a]=127.0.0.1:25380 [b]=127.0.0.1:25390)
work=$(mktemp -d -p "$PWD/target" together.XXXXXX)

# The cgroups are made afresh every round: two cgroups' periods keep the
# phase they started with, and a phase that happens to favour one setting
# would otherwise favour it in every round. Short periods keep a throttled
# spate's pauses short.
declare -A cgroup
period=10000
make_cgroups() { # ROUND
  local x
  for x in a b; do
    if [ -f /sys/fs/cgroup/cgroup.controllers ]; then # v2
      echo +cpu >/sys/fs/cgroup/cgroup.subtree_control
      cgroup[$x]=/sys/fs/cgroup/spate-$x-$$-$1
      mkdir "${cgroup[$x]}"; echo "$((quota * period / 100)) $period" >"${cgroup[$x]}/cpu.max"
    else # v1
      cgroup[$x]=/sys/fs/cgroup/cpu/spate-$x-$$-$1
      mkdir "${cgroup[$x]}"
      echo $period >"${cgroup[$x]}/cpu.cfs_period_us"; echo $((quota * period / 100)) >"${cgroup[$x]}/cpu.cfs_quota_us"
    fi
  done
}
remove_cgroups() {
  [ -n "${cgroup[a]:-}" ] && rmdir "${cgroup[a]}" "${cgroup[b]}" 2>/dev/null || true
}
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  remove_cgroups
  rm -rf "$work"
}
trap cleanup EXIT

# start_spate X PORT_BASE: setting X's spate in its cgroup, relaying from
# PORT_BASE+2 to a sink on PORT_BASE+1. Sets pid[X].
declare -A pid
start_spate() {
  local x=$1 base=$2 dir=$work/$1
  rm -rf "$dir"; mkdir -p "$dir"
  local flags=(--admin "")
  [ -n "${admin_on[$x]}" ] && flags=(--admin "${admin_addr[$x]}")
  # The subshell joins the cgroup, then becomes spate.
  # shellcheck disable=SC2086 # ARGS_X is a list of flags
  (echo $BASHPID >"${cgroup[$x]}/cgroup.procs"
   exec "${bin[$x]}" serve --cores "$cores" --listen "127.0.0.1:$((base + 2))" --smarthost "127.0.0.1:$((base + 1))" \
     --dns 127.0.0.1:9 --spool "$dir/spool" --log-dir "$dir/log" "${flags[@]}" ${args[$x]} 2>"$dir/spate.txt") &
  pid[$x]=$!
  until grep -q "spate: ready" "$dir/spate.txt" 2>/dev/null; do
    kill -0 "${pid[$x]}" 2>/dev/null || { echo "perf/together.sh: ${label[$x]}'s spate did not start:" >&2; cat "$dir/spate.txt" >&2; exit 1; }
    sleep 0.05
  done
}

# Setting X's admin clients, as WATCH_X says; returns once every event
# stream has its first line (": subscribed", sent once every core has it).
start_watchers() { # X
  local x=$1 i
  if [[ " ${watch[$x]} " == *" metrics "* ]]; then
    (while kill -0 "${pid[$x]}" 2>/dev/null; do curl -s -o /dev/null "http://${admin_addr[$x]}/metrics"; sleep 1; done) &
  fi
  if [[ " ${watch[$x]} " == *" events "* ]]; then
    for i in $(seq "${STREAMS:-1}"); do
      rm -f "$work/$x-events-$i.txt"
      curl -sN -o "$work/$x-events-$i.txt" "http://${admin_addr[$x]}/api/v1/events${EVENTS_QUERY:-}" &
    done
    for i in $(seq "${STREAMS:-1}"); do
      until [ -s "$work/$x-events-$i.txt" ]; do sleep 0.05; done
    done
  fi
}

cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"; }
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
describe() { # X
  local x=$1 on=off
  [ -n "${admin_on[$x]}" ] && on=on
  printf '%s: %s, %s connections, admin server %s%s' "${label[$x]}" "$("${bin[$x]}" --version)" "${mode[$x]}" \
    "$on" "${watch[$x]:+ watched by ${watch[$x]}}${args[$x]:+, flags ${args[$x]}}"
}

echo "round,setting,seconds,msgs_per_sec,cpu_us_per_msg" >"$out"
echo "machine: $(nproc) CPUs, $(uname -r); quota ${quota}% of a CPU each; cores $cores"
echo "A = $(describe a)"
echo "B = $(describe b)"
echo "messages=$messages sessions=$sessions size=$size rounds=$rounds"
a=${label[a]} b=${label[b]}
ratios=()
for round in $(seq "$rounds"); do
  if [ $((round % 2)) -eq 1 ]; then order=(a b); else order=(b a); fi
  declare -A base=([${order[0]}]=25310 [${order[1]}]=25320)
  make_cgroups "$round"
  for x in "${order[@]}"; do
    rm -f "$work/$x.end"
    smtp-sink -u nobody -M "$messages" "127.0.0.1:$((base[$x] + 1))" 1024 >/dev/null 2>&1 &
    echo $! >"$work/$x.sink"
    start_spate "$x" "${base[$x]}"
  done
  for x in a b; do start_watchers "$x"; done
  start=$(date +%s.%N)
  for x in "${order[@]}"; do
    reuse=(); [ "${mode[$x]}" = reuse ] && reuse=(-d)
    (smtp-source -s "$sessions" -m "$messages" -l "$size" "${reuse[@]}" -f s@perf.test -t r@perf.test \
       "127.0.0.1:$((base[$x] + 2))" >/dev/null 2>&1 || true) &
  done
  # smtp-sink -M exits on its last message: that is when a relay is done.
  for x in "${order[@]}"; do
    (sink=$(cat "$work/$x.sink")
     while kill -0 "$sink" 2>/dev/null; do sleep 0.01; done
     date +%s.%N >"$work/$x.end.tmp"; mv "$work/$x.end.tmp" "$work/$x.end") &
  done
  waited=0
  until [ -f "$work/a.end" ] && [ -f "$work/b.end" ]; do
    sleep 0.1; waited=$((waited + 1))
    [ "$waited" -lt 6000 ] || { echo "perf/together.sh: a sink never got all $messages messages" >&2; exit 1; }
  done
  declare -A secs cpu rate us
  for x in a b; do
    secs[$x]=$(echo "$(cat "$work/$x.end") - $start" | bc -l)
    cpu[$x]=$(cpu_secs "${pid[$x]}")
    kill -TERM "${pid[$x]}"
    rate[$x]=$(echo "$messages / ${secs[$x]}" | bc -l)
    us[$x]=$(echo "${cpu[$x]} * 1000000 / $messages" | bc -l)
  done
  wait 2>/dev/null || true
  remove_cgroups
  for x in a b; do
    printf '%d,%s,%.4f,%.1f,%.1f\n' "$round" "${label[$x]}" "${secs[$x]}" "${rate[$x]}" "${us[$x]}" >>"$out"
  done
  ratio=$(echo "${secs[b]} / ${secs[a]}" | bc -l)
  ratios+=("$(printf '%.3f' "$ratio")")
  printf 'round %2d (%s started first): %s %6.0f msgs/s %5.1f us/msg, %s %6.0f msgs/s %5.1f us/msg, %s/%s %.3f\n' \
    "$round" "${label[${order[0]}]}" "$a" "${rate[a]}" "${us[a]}" "$b" "${rate[b]}" "${us[b]}" "$a" "$b" "$ratio"
done
echo "median $a/$b throughput over $rounds rounds: $(median "${ratios[@]}")  (all: ${ratios[*]})"
# The mean ratio with a 95% interval (normal approximation, 1.96 standard
# errors): a target is met with confidence when the interval's low end is
# at or above it.
printf '%s\n' "${ratios[@]}" | awk -v name="$a/$b" '{ s += $1; q += $1 * $1; n++ }
  END { m = s / n; v = n > 1 ? (q - n * m * m) / (n - 1) : 0; sd = v > 0 ? sqrt(v) : 0; e = 1.96 * sd / sqrt(n)
        printf "mean %s throughput %.3f, 95%% interval %.3f to %.3f (sd %.3f, %d rounds)\n", name, m, m - e, m + e, sd, n }'
echo "raw runs: $out"
