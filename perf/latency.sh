#!/usr/bin/env bash
# Injection latency against offered load: `spate bench inject --rate R`
# (20 connections, 4 KiB) into `spate serve`, which relays to a
# `spate bench sink`, for each rate R given; prints and writes as CSV the
# p50/p90/p99/p99.9/max latency of the reply to the final dot (which spate
# sends only after the group-commit fdatasync).
#
#   perf/latency.sh [SECONDS_PER_RATE] RATE...
#   perf/latency.sh 4 1000 2000 2750 4000 0        (0: as fast as possible)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-4}; shift || true
rates=("$@"); [ ${#rates[@]} -gt 0 ] || rates=(1000 2000 2750 4000 0)
out=${OUT:-perf/results/latency-$(date +%Y-%m-%d).csv}
# SPATE_BIN: a spate binary to measure instead of this checkout's build.
if [ -z "${SPATE_BIN:-}" ]; then cargo build --release --quiet; fi
bin=${SPATE_BIN:-$PWD/target/release/spate}
# SPOOL_ON: a directory on the filesystem whose spool latency to measure
# (default: target/, on the checkout's filesystem).
work=$(mktemp -d -p "${SPOOL_ON:-$PWD/target}" perf-latency.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
sink=127.0.0.1:25311 spate_addr=127.0.0.1:25312

"$bin" bench sink --listen "$sink" --cores 1 2>/dev/null &
# SPATE_ARGS: extra `spate serve` flags to compare, e.g. "--config spin.toml".
# shellcheck disable=SC2086
"$bin" serve --listen "$spate_addr" --smarthost "$sink" --dns 127.0.0.1:9 \
  --spool "$work/spool" --log-dir "$work/log" ${SPATE_ARGS:-} 2>"$work/spate.txt" &
until grep -q "spate: ready" "$work/spate.txt"; do sleep 0.05; done

echo "offered_rate,achieved_rate,p50_us,p90_us,p99_us,p999_us,max_us" >"$out"
for rate in "${rates[@]}"; do
  if [ "$rate" = 0 ]; then n=20000; flag=(); else n=$((rate * secs)); flag=(--rate "$rate"); fi
  report=$("$bin" bench inject --target "$spate_addr" --messages "$n" --concurrency 20 --size 4096 "${flag[@]}" 2>/dev/null)
  echo "rate=${rate:-max}: $(echo "$report" | head -1 | sed 's/.* in //')"
  echo "  $(echo "$report" | tail -1)"
  achieved=$(echo "$report" | head -1 | sed -E 's/.*: ([0-9]+) msgs\/s$/\1/')
  read -r p50 p90 p99 p999 max < <(echo "$report" | tail -1 | sed -E 's/.*p50 ([0-9]+) +p90 ([0-9]+) +p99 ([0-9]+) +p99.9 ([0-9]+) +max ([0-9]+).*/\1 \2 \3 \4 \5/')
  echo "$rate,$achieved,$p50,$p90,$p99,$p999,$max" >>"$out"
done
echo "raw: $out"
