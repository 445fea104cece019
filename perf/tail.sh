#!/usr/bin/env bash
# Where the final-dot tail comes from: the same offered load, alternating
# three settings in one run, and for each the client's latency (what
# `spate bench inject` measures, final dot sent to 250 read) beside
# spate's own view of the same messages from its /metrics histograms:
#
#   ext4   spool on the checkout's filesystem (target/), the real thing
#   tmpfs  spool on /dev/shm: the same code, but fdatasync returns at once
#   floor  the injector straight into the sink, no spate: the harness's
#          own tail on this machine (scheduling, loopback TCP)
#
# spate's histograms say how many messages took longer than 5, 10 and
# 25 ms between reading the final dot and writing its reply
# (`spate_smtp_final_dot_seconds`), and how many fdatasyncs did
# (`spate_spool_fdatasync_seconds`). A client tail with no server tail
# behind it was spent outside spate.
#
#   perf/tail.sh [ROUNDS] [SECONDS] [RATE]        (defaults 3 12 3000)
#
# SETTINGS="ext4 tmpfs floor" chooses and orders the settings; a name that
# starts with tmpfs puts the spool on /dev/shm, floor runs no spate, any
# other name the spool on target/. ARGS_<name> adds `spate serve` flags to
# that setting, e.g. SETTINGS="tmpfs tmpfs_big" ARGS_tmpfs_big="--config big.toml";
# BIN_<name> runs another spate binary for it (a build to compare with);
# LOG_ON_<name> puts its delivery log in another directory (another
# filesystem, to see what the log's writes do to the spool's syncs).
# PREP_<name> is a command run before that setting's run, e.g. a remount:
#   SETTINGS="discard nodiscard" PREP_discard="mount -o remount,discard /" \
#   PREP_nodiscard="mount -o remount,nodiscard /" perf/tail.sh 3 40
# (put the filesystem back as it was afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3} secs=${2:-12} rate=${3:-3000}
out=${OUT:-perf/results/tail-$(date +%Y-%m-%d).csv}
if [ -z "${SPATE_BIN:-}" ]; then cargo build --release --quiet; fi
bin=${SPATE_BIN:-$PWD/target/release/spate}
sink=127.0.0.1:25321 smtp=127.0.0.1:25322 admin=127.0.0.1:25323
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT

# Waits for a line in a file that a process writes once it is listening.
await_line() { until grep -q "$2" "$1" 2>/dev/null; do sleep 0.05; done; }

# Sums a histogram's buckets over the cores: prints "count >5ms >10ms >25ms".
over() {
  python3 - "$1" "$2" <<'PY'
import re, sys
name, text = sys.argv[2], open(sys.argv[1]).read()
le = {}
for m in re.finditer(r'^%s_bucket\{[^}]*le="([^"]+)"[^}]*\} (\d+)' % name, text, re.M):
    le[m.group(1)] = le.get(m.group(1), 0) + int(m.group(2))
total = le.get("+Inf", 0)
print(total, *(total - le.get(b, 0) for b in ("0.005", "0.01", "0.025")))
PY
}

# Sums a counter over the cores (0 when the build has no such counter).
total() {
  awk -v name="$2" '$1 ~ "^"name"(\\{|$)" { sum += $2 } END { print sum + 0 }' "$1"
}

echo "setting,round,achieved_rate,p50_us,p99_us,p999_us,max_us,server_msgs,server_over_5ms,server_over_10ms,server_over_25ms,syncs,syncs_over_5ms,syncs_over_10ms,syncs_over_25ms,segments_recycled" >"$out"
for round in $(seq "$rounds"); do
  for setting in ${SETTINGS:-ext4 tmpfs floor}; do
    extra_var=ARGS_$setting extra=${!extra_var:-}
    bin_var=BIN_$setting serve_bin=${!bin_var:-$bin}
    log_var=LOG_ON_$setting
    prep_var=PREP_$setting
    [ -z "${!prep_var:-}" ] || eval "${!prep_var}"
    rm -rf "$tmp/run"; mkdir -p "$tmp/run"
    "$bin" bench sink --listen "$sink" --cores 1 >"$tmp/run/sink.txt" 2>&1 &
    sink_pid=$!
    target=$sink
    if [ "$setting" != floor ]; then
      on=$PWD/target; [[ $setting == tmpfs* ]] && on=/dev/shm
      work=$(mktemp -d -p "$on" perf-tail.XXXXXX)
      log=$(mktemp -d -p "${!log_var:-$work}" perf-tail-log.XXXXXX)
      "$serve_bin" serve --listen "$smtp" --smarthost "$sink" --dns 127.0.0.1:9 \
        --admin "$admin" --spool "$work/spool" --log-dir "$log" $extra \
        2>"$tmp/run/spate.txt" &
      spate_pid=$!
      await_line "$tmp/run/spate.txt" "spate: ready"
      target=$smtp
    fi
    report=$("$bin" bench inject --target "$target" --messages $((rate * secs)) \
      --concurrency 20 --size 4096 --rate "$rate" 2>/dev/null)
    achieved=$(echo "$report" | head -1 | sed -E 's/.*: ([0-9]+) msgs\/s$/\1/')
    read -r p50 p99 p999 max < <(echo "$report" | tail -1 |
      sed -E 's/.*p50 ([0-9]+) +p90 [0-9]+ +p99 ([0-9]+) +p99.9 ([0-9]+) +max ([0-9]+).*/\1 \2 \3 \4/')
    server="0 0 0 0" syncs="0 0 0 0" recycled=0
    if [ "$setting" != floor ]; then
      curl -sf "http://$admin/metrics" >"$tmp/run/metrics.txt"
      server=$(over "$tmp/run/metrics.txt" spate_smtp_final_dot_seconds)
      syncs=$(over "$tmp/run/metrics.txt" spate_spool_fdatasync_seconds)
      recycled=$(total "$tmp/run/metrics.txt" spate_spool_segments_recycled_total)
      kill -TERM "$spate_pid"; wait "$spate_pid" || true
      rm -rf "$work" "$log"
    fi
    kill -TERM "$sink_pid"; wait "$sink_pid" 2>/dev/null || true
    echo "$setting,$round,$achieved,$p50,$p99,$p999,$max,${server// /,},${syncs// /,},$recycled" | tee -a "$out"
  done
done
python3 - "$out" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
print("setting  p50_us  p99_us  p99.9_us  max_us  spate>5ms  >10ms  >25ms  syncs>5ms  >10ms  >25ms  (medians)")
for s in dict.fromkeys(r["setting"] for r in rows):
    sel = [r for r in rows if r["setting"] == s]
    med = lambda f: int(statistics.median(int(r[f]) for r in sel))
    print(f"{s:>7} {med('p50_us'):>7} {med('p99_us'):>7} {med('p999_us'):>9} {med('max_us'):>7}"
          f" {med('server_over_5ms'):>10} {med('server_over_10ms'):>6} {med('server_over_25ms'):>6}"
          f" {med('syncs_over_5ms'):>10} {med('syncs_over_10ms'):>6} {med('syncs_over_25ms'):>6}")
PY
echo "raw: $out"
