#!/usr/bin/env bash
# Injection throughput: Postfix's smtp-source pushes N messages of SIZE bytes
# over SESSIONS parallel sessions into `spate serve` (fdatasync before every
# 250), once per core count, in one run on one machine. Prints msgs/s as the
# median of RUNS runs per setting, with the raw times.
#
#   perf/inject.sh [MESSAGES] [SESSIONS] [SIZE] [RUNS] [CORES...]
#   perf/inject.sh 20000 20 4096 3 1 2
#
# Time runs from smtp-source's start to its exit (every message acknowledged).
# The relay comparison against Postfix needs delivery (issue 4), not here.
set -euo pipefail
cd "$(dirname "$0")/.."
messages=${1:-20000}; sessions=${2:-20}; size=${3:-4096}; runs=${4:-3}; shift $(( $# < 4 ? $# : 4 )) || true
cores=("$@"); [ ${#cores[@]} -gt 0 ] || cores=(1 2)

cargo build --release --quiet
bin=target/release/spate
work=$(mktemp -d -p "$PWD/target" perf-inject.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
addr=127.0.0.1:25250

echo "machine: $(nproc) CPUs, $(uname -r), spool on $(df --output=fstype "$PWD/target" | tail -1)"
echo "messages=$messages sessions=$sessions size=$size runs=$runs"
for c in "${cores[@]}"; do
  times=()
  for r in $(seq "$runs"); do
    rm -rf "$work/spool"
    # --dns to the discard port: the recipients are never resolved (no query
    # leaves the machine); delivery defers them, which does not slow injection.
    "$bin" serve --cores "$c" --listen "$addr" --spool "$work/spool" --log-dir "$work/log" --dns 127.0.0.1:9 2>"$work/log.txt" &
    pid=$!
    until grep -q "spate: ready" "$work/log.txt"; do sleep 0.05; done
    start=$(date +%s.%N)
    smtp-source -s "$sessions" -m "$messages" -l "$size" -d -f s@perf.test -t r@perf.test "$addr"
    end=$(date +%s.%N)
    kill -TERM "$pid"; wait "$pid"
    times+=("$(echo "$end - $start" | bc -l)")
  done
  sorted=$(printf '%s\n' "${times[@]}" | sort -n)
  median=$(echo "$sorted" | sed -n "$(( (runs + 1) / 2 ))p")
  rate=$(echo "$messages / $median" | bc -l)
  printf 'cores=%s  median %.3f s  %.0f msgs/s  raw: %s\n' "$c" "$median" "$rate" "${times[*]}"
done
