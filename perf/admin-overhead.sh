#!/usr/bin/env bash
# What the control plane costs at the relay peak: perf/relay.sh (reused
# connections, no Postfix) with two settings side by side in one run,
#   admin  the admin server on, /metrics scraped every second and one
#          event stream of every delivery-log record open all the while
#          (curl, reading to /dev/null);
#   none   `--admin ""`: no admin server at all.
# relay.sh runs one setting's runs before the other's, and this machine's
# load drifts: so relay.sh is called once per pair of runs, the order
# alternating, and the ratio is taken within each pair. Prints each pair
# and the median ratio; the CSVs go to OUT_DIR (default
# perf/results/admin-overhead-<date>).
#
#   perf/admin-overhead.sh [MESSAGES] [SESSIONS] [SIZE] [PAIRS] [CORES]
#   perf/admin-overhead.sh 20000 20 4096 12 2
set -euo pipefail
cd "$(dirname "$0")/.."
messages=${1:-20000}; sessions=${2:-20}; size=${3:-4096}; pairs=${4:-12}; cores=${5:-2}
out_dir=${OUT_DIR:-perf/results/admin-overhead-$(date +%Y-%m-%d)}
mkdir -p "$out_dir" target
cargo build --release --quiet
bin=$PWD/target/release/spate
wrappers=$(mktemp -d -p "$PWD/target" admin-overhead.XXXXXX)
trap 'rm -rf "$wrappers"' EXIT
admin=127.0.0.1:25380
cat >"$wrappers/admin" <<SH
#!/usr/bin/env bash
# Runs as spate's own pid (exec below); the watchers end with it.
me=\$\$
( while kill -0 \$me 2>/dev/null; do curl -s -o /dev/null http://$admin/metrics; sleep 1; done ) &
( while kill -0 \$me 2>/dev/null; do curl -sN -o /dev/null http://$admin/api/v1/events; sleep 0.2; done ) &
exec $bin "\$@" --admin $admin
SH
cat >"$wrappers/none" <<SH
#!/usr/bin/env bash
exec $bin "\$@" --admin ""
SH
chmod +x "$wrappers/admin" "$wrappers/none"
ratios=()
for pair in $(seq "$pairs"); do
  if [ $((pair % 2)) -eq 1 ]; then first=admin second=none; else first=none second=admin; fi
  csv="$out_dir/pair-$pair.csv"
  BINS="$first=$wrappers/$first $second=$wrappers/$second" MODES=reuse POSTFIX_MODES= OUT="$csv" \
    perf/relay.sh "$messages" "$sessions" "$size" 1 "$cores" >/dev/null
  # seconds of each setting's run, and CPU microseconds per message
  read -r a a_cpu < <(awk -F, '$2 == "admin-cores'"$cores"'" {print $4, $6}' "$csv")
  read -r n n_cpu < <(awk -F, '$2 == "none-cores'"$cores"'" {print $4, $6}' "$csv")
  ratio=$(awk -v a="$a" -v n="$n" 'BEGIN {printf "%.3f", n / a}')
  ratios+=("$ratio")
  printf 'pair %2d (%s first): admin %.3f s %s us/msg, none %.3f s %s us/msg, admin/none throughput %s\n' \
    "$pair" "$first" "$a" "$a_cpu" "$n" "$n_cpu" "$ratio"
done
printf 'median admin/none throughput over %d pairs: %s\n' "$pairs" \
  "$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}')"
