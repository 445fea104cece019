#!/usr/bin/env bash
# Relay throughput side by side, on one machine in one run: Postfix's
# smtp-source (SESSIONS sessions, MESSAGES messages of SIZE bytes) pushes
# mail into
#   ceiling  smtp-sink directly (what the harness itself can do here),
#   spate    `spate serve --smarthost` to smtp-sink,
#   postfix  a private Postfix instance relaying to the same smtp-sink,
# both relays with their queues synced to disk before every 250 (spate's
# group commit; Postfix's default fsync of each queue file). Time runs from
# the first injection until smtp-sink has received the last message
# (smtp-sink -M exits then: this harness awaits the sink's exit, it does not
# poll a running count). Each setting runs RUNS times; medians, ratios and
# raw times go to stdout and, as CSV, to OUT (default
# perf/results/relay-<date>.csv).
#
# Two ways of injecting, each measured with its own ceiling (MODES, default
# "reuse new"):
#   reuse  smtp-source -d: each session keeps its connection for all its
#          messages;
#   new    a new connection for every message, as many injecting
#          applications do.
# Postfix runs in the modes listed in POSTFIX_MODES (default "reuse": it
# takes half a minute a run).
#
#   perf/relay.sh [MESSAGES] [SESSIONS] [SIZE] [RUNS] [SPATE_CORES...]
#   perf/relay.sh 20000 20 4096 3 2 1
#   MODES=new POSTFIX_MODES= perf/relay.sh 20000 20 4096 5 2
# Two builds side by side, each label a setting of its own (the first one
# is the one ratios are quoted for):
#   BINS="after=target/release/spate before=/tmp/spate-old" perf/relay.sh
#
# Needs root (smtp-sink -u, a Postfix instance) and Debian's postfix.
set -euo pipefail
cd "$(dirname "$0")/.."
messages=${1:-20000}; sessions=${2:-20}; size=${3:-4096}; runs=${4:-3}
shift $(( $# < 4 ? $# : 4 )) || true
cores=("$@"); [ ${#cores[@]} -gt 0 ] || cores=(2)
out=${OUT:-perf/results/relay-$(date +%Y-%m-%d).csv}
modes=${MODES:-reuse new}
postfix_modes=${POSTFIX_MODES-reuse}

bins=${BINS:-}
if [ -z "$bins" ]; then cargo build --release --quiet; bins="spate=$PWD/target/release/spate"; fi
bin=${bins%% *}; bin=${bin#*=}
work=$(mktemp -d -p "$PWD/target" perf-relay.XXXXXX)
chmod 755 "$work" # Postfix's own user must reach its data directory.
sink=127.0.0.1:25301 spate_addr=127.0.0.1:25302 postfix_addr=127.0.0.1:25303
cleanup() {
  [ -f "$work/postfix/main.cf" ] && postfix -c "$work/postfix" stop >/dev/null 2>&1 || true
  kill $(jobs -p) 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# One timed run: smtp-source into $1 until smtp-sink has every message;
# $mode says whether sessions reuse their connection.
timed_run() {
  smtp-sink -u nobody -M "$messages" "$sink" 1024 >/dev/null 2>&1 &
  local sinkpid=$!
  until (exec 3<>/dev/tcp/127.0.0.1/25301) 2>/dev/null; do sleep 0.05; done
  local start end
  start=$(date +%s.%N)
  # smtp-sink exits on the last message and may cut smtp-source's QUIT.
  local reuse=(); [ "$mode" = reuse ] && reuse=(-d)
  smtp-source -s "$sessions" -m "$messages" -l "$size" "${reuse[@]}" -f s@perf.test -t r@perf.test "$1" 2>/dev/null || true
  # A watchdog ends a run whose sink never gets every message.
  (sleep 600; kill "$sinkpid" 2>/dev/null) >/dev/null 2>&1 &
  local watchdog=$!
  wait "$sinkpid" || { echo "perf/relay.sh: the sink never got all $messages messages" >&2; exit 1; }
  end=$(date +%s.%N)
  kill "$watchdog" 2>/dev/null || true
  echo "$end - $start" | bc -l
}

start_spate() { # cores, binary
  rm -rf "$work/spool" "$work/log"
  "$2" serve --cores "$1" --listen "$spate_addr" --smarthost "$sink" --dns 127.0.0.1:9 \
    --spool "$work/spool" --log-dir "$work/log" 2>"$work/spate.txt" &
  spate_pid=$!
  until grep -q "spate: ready" "$work/spate.txt"; do sleep 0.05; done
}

# CPU seconds (user + system) a process has used so far.
cpu_secs() {
  awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"
}

start_postfix() {
  local d=$work/postfix
  rm -rf "$d" "$work/pfq" "$work/pfd"; mkdir -p "$d" "$work/pfq" "$work/pfd"
  chown postfix "$work/pfd"
  cp /etc/postfix/master.cf "$d/"
  sed -i "s/^smtp \+inet/$postfix_addr inet/" "$d/master.cf"
  cat >"$d/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $work/pfq
data_directory = $work/pfd
mail_owner = postfix
setgid_group = postdrop
myhostname = relay.perf.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
relayhost = [127.0.0.1]:25301
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
maillog_file = /dev/stdout
smtp_tls_security_level = none
smtpd_tls_security_level = none
CF
  postconf -c "$d" -F '*/*/chroot = n'
  postfix -c "$d" start-fg >"$work/postfix.log" 2>&1 &
  local tries=0
  until (exec 3<>/dev/tcp/127.0.0.1/25303) 2>/dev/null; do
    sleep 0.1; tries=$((tries + 1))
    if [ "$tries" -gt 300 ]; then echo "perf/relay.sh: Postfix did not start:" >&2; cat "$work/postfix.log" >&2; exit 1; fi
  done
}

median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }

declare -A result
echo "mode,setting,run,seconds,msgs_per_sec,cpu_us_per_msg" >"$out"
record() { # name, then times; CPU seconds per run in the array cpu (may be empty)
  local name=$1; shift
  local i=0 t c
  for t in "$@"; do
    c=${cpu[$i]:-}; i=$((i + 1))
    printf '%s,%s,%d,%.4f,%.1f,%s\n' "$mode" "$name" "$i" "$t" "$(echo "$messages / $t" | bc -l)" \
      "${c:+$(printf '%.1f' "$(echo "$c * 1000000 / $messages" | bc -l)")}" >>"$out"
  done
  local m; m=$(median "$@")
  result[$mode-$name]=$(echo "$messages / $m" | bc -l)
  printf '%-6s %-14s median %8.3f s  %8.0f msgs/s  raw: %s\n' "$mode" "$name" "$m" "${result[$mode-$name]}" "$*"
}

echo "machine: $(nproc) CPUs, $(uname -r); $(postconf -h mail_version 2>/dev/null | sed 's/^/postfix /'); $("$bin" --version)"
echo "messages=$messages sessions=$sessions size=$size runs=$runs modes=$modes"
for mode in $modes; do
  times=(); cpu=()
  for r in $(seq "$runs"); do times+=("$(timed_run "$sink")"); done; record ceiling "${times[@]}"
  for c in "${cores[@]}"; do
    for b in $bins; do
      label=${b%%=*}; path=${b#*=}
      times=(); cpu=()
      for r in $(seq "$runs"); do
        start_spate "$c" "$path"; times+=("$(timed_run "$spate_addr")")
        cpu+=("$(cpu_secs "$spate_pid")")
        kill -TERM "$spate_pid"; wait "$spate_pid" || true
      done
      record "$label-cores$c" "${times[@]}"
      printf '%-6s %-14s CPU per relayed message: %.1f us (median of %s CPU-seconds for %d messages)\n' "" "" \
        "$(echo "$(median "${cpu[@]}") * 1000000 / $messages" | bc -l)" "${cpu[*]}" "$messages"
    done
  done
  if [[ " $postfix_modes " == *" $mode "* ]]; then
    times=(); cpu=()
    for r in $(seq "$runs"); do start_postfix; times+=("$(timed_run "$postfix_addr")"); postfix -c "$work/postfix" stop >/dev/null 2>&1; wait 2>/dev/null || true; done
    record postfix "${times[@]}"
  fi
done

first="${bins%%=*}-cores${cores[0]}"
for mode in $modes; do
  printf '%-6s %s/ceiling %.2f' "$mode" "$first" "$(echo "${result[$mode-$first]} / ${result[$mode-ceiling]}" | bc -l)"
  [ -n "${result[$mode-postfix]:-}" ] && printf '   %s/postfix %.1fx' "$first" "$(echo "${result[$mode-$first]} / ${result[$mode-postfix]}" | bc -l)"
  echo
done
if [[ " $modes " == *" new "* && " $modes " == *" reuse "* ]]; then
  printf 'new/reuse %s %.2f\n' "$first" "$(echo "${result[new-$first]} / ${result[reuse-$first]}" | bc -l)"
fi
echo "raw runs: $out"
