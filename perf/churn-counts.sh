#!/usr/bin/env bash
# Where a relayed message's cost goes, counted per message for each spate
# thread: context switches, the io_uring_enter calls and membarriers of
# glommio's executor (a core that runs out of work parks: it flushes its
# rings, issues a membarrier, an IPI to the CPUs running spate's other
# threads, and sleeps in io_uring_enter), and the socket system calls.
# smtp-source (SESSIONS sessions, MESSAGES messages of SIZE bytes) relays
# through `spate serve --cores N` into smtp-sink, once per core count and
# mode; `perf stat` counts spate's threads while it runs. Prints a table
# per run and writes every count to OUT (default
# perf/results/churn-counts-<date>.csv).
#
#   perf/churn-counts.sh [MESSAGES] [SESSIONS] [SIZE] [CORES...]
#   MODES="new reuse" perf/churn-counts.sh 20000 20 4096 1 2
#
# Needs root (perf stat on tracepoints, smtp-sink -u), Debian's postfix
# (smtp-source, smtp-sink) and linux-perf.
set -euo pipefail
cd "$(dirname "$0")/.."
messages=${1:-20000}; sessions=${2:-20}; size=${3:-4096}
shift $(( $# < 3 ? $# : 3 )) || true
cores=("$@"); [ ${#cores[@]} -gt 0 ] || cores=(1 2)
modes=${MODES:-new reuse}
out=${OUT:-perf/results/churn-counts-$(date +%Y-%m-%d).csv}
bin=${BIN:-}
if [ -z "$bin" ]; then cargo build --release --quiet; bin=$PWD/target/release/spate; fi
work=$(mktemp -d -p "$PWD/target" churn.XXXXXX)
sink=127.0.0.1:25311 spate_addr=127.0.0.1:25312
cleanup() { kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
events=context-switches
for s in io_uring_enter membarrier sendto recvfrom accept fcntl setsockopt getpeername write; do
  events+=",syscalls:sys_enter_$s"
done

echo "mode,cores,thread,event,count,per_message" >"$out"
for mode in $modes; do
  for c in "${cores[@]}"; do
    rm -rf "$work/spool" "$work/log"
    smtp-sink -u nobody -M "$messages" "$sink" 1024 >/dev/null 2>&1 &
    sinkpid=$!
    "$bin" serve --cores "$c" --listen "$spate_addr" --smarthost "$sink" --dns 127.0.0.1:9 \
      --admin "" --spool "$work/spool" --log-dir "$work/log" 2>"$work/spate.txt" &
    spate_pid=$!
    until grep -q "spate: ready" "$work/spate.txt"; do sleep 0.05; done
    until (exec 3<>/dev/tcp/127.0.0.1/25311) 2>/dev/null; do sleep 0.05; done
    # perf stat starts with its counters off and acknowledges turning them
    # on, so counting has begun before the load does.
    rm -f "$work/ctl" "$work/ack"; mkfifo "$work/ctl" "$work/ack"
    perf stat --per-thread -x, -e "$events" -p "$spate_pid" -o "$work/stat.csv" \
      -D -1 --control "fifo:$work/ctl,$work/ack" 2>"$work/perf.txt" &
    statpid=$!
    echo enable >"$work/ctl"
    read -r _ <"$work/ack"
    cpu0=$(awk '{ print $14 + $15 }' "/proc/$spate_pid/stat")
    start=$(date +%s.%N)
    reuse=(); [ "$mode" = reuse ] && reuse=(-d)
    smtp-source -s "$sessions" -m "$messages" -l "$size" "${reuse[@]}" \
      -f s@perf.test -t r@perf.test "$spate_addr" 2>/dev/null || true
    wait "$sinkpid"
    end=$(date +%s.%N)
    cpu1=$(awk '{ print $14 + $15 }' "/proc/$spate_pid/stat")
    kill -INT "$statpid"; wait "$statpid" || true
    kill -TERM "$spate_pid"; wait "$spate_pid" || true
    rate=$(echo "$messages / ($end - $start)" | bc -l)
    cpu=$(echo "($cpu1 - $cpu0) / $(getconf CLK_TCK) * 1000000 / $messages" | bc -l)
    printf '\n%s, --cores %s: %.0f msgs/s, %.0f us of spate CPU per message\n' "$mode" "$c" "$rate" "$cpu"
    echo "$mode,$c,all,cpu_us,,$cpu" >>"$out"
    # perf's -x, lines: thread-tid,count,unit,event,...
    printf '%-14s' "per message"; for e in ${events//,/ }; do printf ' %7.7s' "${e#syscalls:sys_enter_}"; done; echo
    # Threads are named <name>-<tid>; glommio's cores spate-core-<i>-<id>.
    awk -F, -v m="$messages" -v mode="$mode" -v c="$c" -v out="$out" -v evlist="$events" '
      /^[^#]/ && NF > 4 && $2 ~ /^[0-9]+$/ {
        thread = $1; sub(/-[0-9]+$/, "", thread)
        if (thread ~ /^spate-core-[0-9]+-[0-9]+$/) sub(/-[0-9]+$/, "", thread)
        if (thread ~ /^iou-wrk/) thread = "iou-wrk"
        ev = $4; sub(/^syscalls:sys_enter_/, "", ev)
        per[thread "," ev] += $2; per["total," ev] += $2; threads[thread] = 1
      }
      END {
        n = split(evlist, evs, ","); for (i = 1; i <= n; i++) sub(/^syscalls:sys_enter_/, "", evs[i])
        threads["total"] = 1
        for (k in per) printf "%s,%s,%s,%d,%.3f\n", mode, c, k, per[k], per[k] / m >> out
        for (t in threads) {
          printf "%-14s", t
          for (i = 1; i <= n; i++) printf " %7.2f", per[t "," evs[i]] / m
          printf "\n"
        }
      }' "$work/stat.csv" | sort
  done
done
echo "counts: $out"
