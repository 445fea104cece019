#!/usr/bin/env bash
# What the control plane costs at the relay peak: perf/relay.sh (reused
# connections, no Postfix) with two settings side by side in one run,
#   admin  the admin server on, /metrics scraped every second and one
#          event stream of every delivery-log record open all the while
#          (curl, reading to /dev/null);
#   none   `--admin ""`: no admin server at all.
# relay.sh runs one setting's runs before the other's, so it is run twice,
# in both orders; the ratio of each pass and the raw times are printed,
# and the CSVs go to OUT_DIR (default perf/results/admin-overhead-<date>).
#
#   perf/admin-overhead.sh [MESSAGES] [SESSIONS] [SIZE] [RUNS] [CORES]
#   perf/admin-overhead.sh 20000 20 4096 3 2
set -euo pipefail
cd "$(dirname "$0")/.."
messages=${1:-20000}; sessions=${2:-20}; size=${3:-4096}; runs=${4:-3}; cores=${5:-2}
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
for order in "admin none" "none admin"; do
  set -- $order
  echo "== pass: $1 first"
  BINS="$1=$wrappers/$1 $2=$wrappers/$2" MODES=reuse POSTFIX_MODES= OUT="$out_dir/$1-first.csv" \
    perf/relay.sh "$messages" "$sessions" "$size" "$runs" "$cores" | grep -E "median|CPU per|machine"
done
