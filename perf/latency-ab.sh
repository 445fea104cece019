#!/usr/bin/env bash
# Side-by-side latency of two `spate serve` settings, alternating A and B
# for ROUNDS rounds on the same machine in one run (perf/latency.sh each
# time), then the median of each percentile per setting and rate.
#
#   perf/latency-ab.sh ROUNDS SECONDS "A_ARGS" "B_ARGS" RATE...
#   perf/latency-ab.sh 3 4 "--config a.toml" "--config b.toml" 2000 3500
#
# A_BIN / B_BIN: compare two builds (spate binaries) instead of, or as well
# as, two sets of flags. A_SPOOL_ON / B_SPOOL_ON: compare two filesystems
# (a directory on each to put the spool in).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=$1 secs=$2 a_args=$3 b_args=$4; shift 4
out=${OUT:-perf/results/latency-ab-$(date +%Y-%m-%d).csv}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "setting,round,offered_rate,achieved_rate,p50_us,p90_us,p99_us,p999_us,max_us" >"$out"
for round in $(seq "$rounds"); do
  for setting in A B; do
    if [ "$setting" = A ]; then
      args=$a_args bin=${A_BIN:-} spool_on=${A_SPOOL_ON:-$PWD/target}
    else
      args=$b_args bin=${B_BIN:-} spool_on=${B_SPOOL_ON:-$PWD/target}
    fi
    OUT="$tmp/run.csv" SPATE_ARGS="$args" SPATE_BIN="$bin" SPOOL_ON="$spool_on" \
      perf/latency.sh "$secs" "$@" >/dev/null
    tail -n +2 "$tmp/run.csv" | sed "s/^/$setting,$round,/" >>"$out"
  done
done
echo "A: ${A_BIN:-this build} $a_args ${A_SPOOL_ON:-}"
echo "B: ${B_BIN:-this build} $b_args ${B_SPOOL_ON:-}"
python3 - "$out" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
keys = sorted({(r["offered_rate"], r["setting"]) for r in rows}, key=lambda k: (int(k[0]), k[1]))
print("rate  set  achieved  p50_us  p90_us  p99_us  p99.9_us  max_us   (medians)")
for rate, s in keys:
    sel = [r for r in rows if r["offered_rate"] == rate and r["setting"] == s]
    med = lambda f: int(statistics.median(int(r[f]) for r in sel))
    print(f"{rate:>5} {s:>4} {med('achieved_rate'):>9} {med('p50_us'):>7} {med('p90_us'):>7} {med('p99_us'):>7} {med('p999_us'):>9} {med('max_us'):>7}")
PY
echo "raw: $out"
