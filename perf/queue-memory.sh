#!/usr/bin/env bash
# Queue memory and recovery time at scale: `spate bench inject` queues
# MESSAGES one-recipient messages of SIZE bytes into `spate serve`, whose
# only destination refuses connections (a smarthost on the discard port,
# where nothing listens), so every message stays queued for its retry.
# Reports:
#   - anonymous memory (RssAnon) per queued message once every message has
#     been deferred (live), and again after kill -9 and a restart (recovered);
#   - time from exec to "spate: ready" after kill -9, with the spool in the
#     page cache (warm) and after dropping the page cache (cold; needs root).
# A CSV line per run goes to OUT (default perf/results/queue-memory-<date>.csv).
#
#   perf/queue-memory.sh [MESSAGES] [CORES] [SIZE] [RUNS]
#   perf/queue-memory.sh 1000000 2 1024 1
set -euo pipefail
cd "$(dirname "$0")/.."
messages=${1:-1000000}; cores=${2:-2}; size=${3:-1024}; runs=${4:-1}
out=${OUT:-perf/results/queue-memory-$(date +%Y-%m-%d).csv}
bin=${BIN:-$PWD/target/release/spate}
[ -n "${BIN:-}" ] || cargo build --release --quiet
work=$(mktemp -d -p "${WORK_DIR:-$PWD/target}" perf-queue.XXXXXX)
addr=127.0.0.1:25402
cleanup() { kill -9 $(jobs -p) 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

rss_anon_kib() { awk '/^RssAnon:/ { print $2 }' "/proc/$1/status"; }

# Starts spate on the work spool; sets $pid and $ready_secs (exec to ready).
start() {
  : >"$work/spate.txt"
  local t0; t0=$(date +%s.%N)
  "$bin" serve --cores "$cores" --listen "$addr" --smarthost 127.0.0.1:9 \
    --dns 127.0.0.1:9 --spool "$work/spool" --log-dir "$work/log" 2>"$work/spate.txt" &
  pid=$!
  until grep -q "spate: ready" "$work/spate.txt"; do
    kill -0 "$pid" 2>/dev/null || { echo "spate exited:"; cat "$work/spate.txt"; exit 1; } >&2
    sleep 0.01
  done
  ready_secs=$(echo "$(date +%s.%N) - $t0" | bc -l)
}

# Waits until every message has been deferred once (a TransientFailure
# record in the delivery log, which is flushed every 100 ms).
wait_all_deferred() {
  local n=0
  while [ "$n" -lt "$messages" ]; do
    sleep 1
    n=$(cat "$work"/log/delivery-core*.jsonl | grep -c '"type":"TransientFailure"' || true)
  done
}

[ -f "$out" ] || echo "date,messages,cores,size,live_bytes_per_msg,recovered_bytes_per_msg,ready_warm_s,ready_cold_s,inject_msgs_per_s" >"$out"
echo "machine: $(nproc) CPUs, $(uname -r), spool on $(df --output=fstype "$work" | tail -1); $("$bin" --version)"
echo "messages=$messages cores=$cores size=$size runs=$runs"
for r in $(seq "$runs"); do
  rm -rf "$work/spool" "$work/log"
  start
  base=$(rss_anon_kib "$pid")
  inject=$("$bin" bench inject --target "$addr" --messages "$messages" --concurrency 20 \
    --size "$size" --domains 1 --recipients 1 | sed -n 1p)
  rate=$(sed -n 's/.*: \([0-9]*\) msgs\/s$/\1/p' <<<"$inject")
  wait_all_deferred
  # The last deferrals' log lines and state records are still being
  # written: let those buffers go before taking the figure.
  sleep 2
  live=$(rss_anon_kib "$pid")
  kill -9 "$pid"; wait "$pid" 2>/dev/null || true
  # Warm: the spool is in the page cache and the disk is idle (not still
  # writing back what the killed process wrote).
  sync

  start; warm=$ready_secs
  recovered=$(rss_anon_kib "$pid")
  kill -9 "$pid"; wait "$pid" 2>/dev/null || true

  sync; echo 3 >/proc/sys/vm/drop_caches
  start; cold=$ready_secs
  kill -9 "$pid"; wait "$pid" 2>/dev/null || true

  live_b=$(( (live - base) * 1024 / messages ))
  rec_b=$(( (recovered - base) * 1024 / messages ))
  printf 'run %d: injected at %s msgs/s; anonymous memory per queued message: live %d bytes, after kill -9 and restart %d bytes (base %d KiB); ready after restart: warm %.2f s, cold %.2f s\n' \
    "$r" "$rate" "$live_b" "$rec_b" "$base" "$warm" "$cold"
  echo "$(date -u +%FT%TZ),$messages,$cores,$size,$live_b,$rec_b,$warm,$cold,$rate" >>"$out"
done
echo "raw runs: $out"
