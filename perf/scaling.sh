#!/usr/bin/env bash
# Relay throughput against the number of spate cores, on one machine in one
# run: `spate serve --cores 0-(N-1)` relays to `spate bench sink`, while
# GENERATORS `spate bench inject` processes (each one thread, 20
# connections, 4 KiB, 1 recipient, DOMAINS domains in a Zipf mix) push
# MESSAGES each. The sink and the generators are pinned to TOOL_CPUS, away
# from spate's. Time runs from the first injection until the sink holds
# every message. A "ceiling" row runs the generators straight into the sink:
# what the tools on TOOL_CPUS can do at all. Each setting runs RUNS times;
# medians and raw numbers go to stdout and, as CSV, to OUT (default
# perf/results/scaling-<date>.csv). SINK_CORES (default 1) gives the sink
# more threads when the tools have CPUs to spare.
#
#   perf/scaling.sh MESSAGES GENERATORS DOMAINS TOOL_CPUS RUNS N...
#   perf/scaling.sh 40000 3 1000 12-15 3 1 2 4 8 12     (a 16-CPU machine)
#   perf/scaling.sh 5000 1 1000 0-1 1 1 2              (a smoke run here)
#
# With a Zipf mix the biggest domains weigh most, and each domain belongs to
# one core: use many domains, or the curve shows the biggest domain's core.
set -euo pipefail
cd "$(dirname "$0")/.."
messages=$1 generators=$2 domains=$3 tool_cpus=$4 runs=$5; shift 5
counts=("$@")
sink_cores=${SINK_CORES:-1}
out=${OUT:-perf/results/scaling-$(date +%Y-%m-%d).csv}
if [ -z "${SPATE_BIN:-}" ]; then cargo build --release --quiet; fi
bin=${SPATE_BIN:-$PWD/target/release/spate}
mkdir -p target
work=$(mktemp -d -p "$PWD/target" perf-scaling.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
sink=127.0.0.1:25321 spate_addr=127.0.0.1:25322
total=$((messages * generators))

# One timed run into $1; prints seconds from the first injection until the
# sink has every message.
timed_run() {
  taskset -c "$tool_cpus" "$bin" bench sink --listen "$sink" --cores "$sink_cores" --exit-after "$total" >/dev/null 2>&1 &
  local sinkpid=$!
  until (exec 3<>/dev/tcp/127.0.0.1/25321) 2>/dev/null; do sleep 0.05; done
  local start end pids=()
  start=$(date +%s.%N)
  for _ in $(seq "$generators"); do
    taskset -c "$tool_cpus" "$bin" bench inject --target "$1" --messages "$messages" \
      --concurrency 20 --size 4096 --domains "$domains" >/dev/null 2>&1 &
    pids+=($!)
  done
  wait "${pids[@]}"
  wait "$sinkpid"
  end=$(date +%s.%N)
  awk -v a="$start" -v b="$end" 'BEGIN {printf "%.3f", b - a}'
}
# $1 / $2, for rates (no bc: the machine that runs this may lack it).
div() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", a / b}'; }

echo "machine: $(nproc) CPUs, $(uname -r); spate $("$bin" --version | awk '{print $2}')"
echo "messages=$total generators=$generators sink_cores=$sink_cores domains=$domains tool_cpus=$tool_cpus runs=$runs"
echo "setting,run,seconds,msgs_per_s" >"$out"
report() {
  local name=$1; shift
  local med
  med=$(printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  printf '%-10s median %8.3f s  %8.0f msgs/s  raw: %s\n' "$name" "$med" "$(div "$total" "$med")" "$*"
}

times=()
for run in $(seq "$runs"); do
  t=$(timed_run "$sink")
  times+=("$t"); echo "ceiling,$run,$t,$(div "$total" "$t")" >>"$out"
done
report ceiling "${times[@]}"

for n in "${counts[@]}"; do
  times=()
  for run in $(seq "$runs"); do
    rm -rf "$work/spool" "$work/log"
    "$bin" serve --cores "0-$((n - 1))" --listen "$spate_addr" --smarthost "$sink" \
      --dns 127.0.0.1:9 --spool "$work/spool" --log-dir "$work/log" 2>"$work/spate.txt" &
    spate_pid=$!
    until grep -q "spate: ready" "$work/spate.txt"; do
      kill -0 "$spate_pid" 2>/dev/null || { cat "$work/spate.txt" >&2; exit 1; }
      sleep 0.05
    done
    t=$(timed_run "$spate_addr")
    kill "$spate_pid"; wait "$spate_pid" 2>/dev/null || true
    times+=("$t"); echo "cores-$n,$run,$t,$(div "$total" "$t")" >>"$out"
  done
  report "cores-$n" "${times[@]}"
done
echo "raw runs: $out"
