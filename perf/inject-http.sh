#!/usr/bin/env bash
# HTTP injection next to SMTP injection of the same messages, in one run on
# one machine: REQUESTS requests of RECIPIENTS recipients each, every
# recipient with a substitution of their own (so every recipient gets a
# message of their own), POSTed by curl over PARALLEL connections to
# `spate serve --inject`; then the same number of one-recipient messages
# of the same size pushed by Postfix's smtp-source over SESSIONS sessions.
# Both with fdatasync before every acknowledgement. Runs alternate (HTTP,
# SMTP, HTTP, SMTP, ...); prints msgs/s and spate's CPU per message (user +
# system, from /proc) as the median of RUNS runs of each, with the raw
# figures, and the ratio HTTP/SMTP of the medians.
#
#   perf/inject-http.sh [REQUESTS] [RECIPIENTS] [PARALLEL] [SESSIONS] [RUNS] [CORES]
#   perf/inject-http.sh 20 1000 4 20 5 2
#
# Timed from the first request (or smtp-source's start) to the last answer
# (smtp-source's exit): every message acknowledged, hence durable. Delivery
# is left to defer (DNS goes to the discard port), as in perf/inject.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-20}; recipients=${2:-1000}; parallel=${3:-4}; sessions=${4:-20}; runs=${5:-5}; cores=${6:-2}
for tool in curl smtp-source python3; do
  command -v "$tool" >/dev/null || { echo "perf/inject-http.sh: needs $tool" >&2; exit 1; }
done

cargo build --release --quiet
bin=target/release/spate
work=$(mktemp -d -p "$PWD/target" perf-inject-http.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
addr=127.0.0.1:25260
http=127.0.0.1:25261
admin=127.0.0.1:25262
messages=$((requests * recipients))

# One request: RECIPIENTS recipients over 50 domains, each with a name of
# their own in the subject, the text and the html.
python3 - "$recipients" >"$work/request.json" <<'EOF'
import json, sys
n = int(sys.argv[1])
print(json.dumps({
    "sender": "bounces@shop.perf.test", "tenant": "acme", "campaign": "peak",
    "vars": {"shop": "Acme"},
    "recipients": [{"address": f"r{i}@d{i % 50}.perf.test", "vars": {"name": f"Reader {i}"}} for i in range(n)],
    "content": {
        "from": "news@shop.perf.test", "from_name": "Acme News",
        "subject": "Deals for {{ name }}",
        "text": "Hello {{ name }},\n\n" + "Our peak-day offers from {{ shop }} are here.\n" * 12,
        "html": "<p>Hello {{ name }},</p>" + "<p>Our peak-day offers from {{ shop }} are here.</p>" * 12,
    },
}))
EOF

start_spate() {
  rm -rf "$work/spool" "$work/log"
  "$bin" serve --cores "$cores" --listen "$addr" --inject "$http" --admin "$admin" \
    --spool "$work/spool" --log-dir "$work/log" --dns 127.0.0.1:9 2>"$work/log.txt" &
  pid=$!
  until grep -q "spate: ready" "$work/log.txt"; do sleep 0.05; done
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }

stop_spate() { kill -TERM "$pid"; wait "$pid" || true; }

# The size of one composed message, for smtp-source's -l.
start_spate
token=$(cut -d: -f2 "$work/spool/admin.token")
one=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); r["recipients"]=r["recipients"][:1]; print(json.dumps(r))' "$work/request.json")
curl -sf -H "Authorization: Bearer $token" --data-binary "$one" "http://$http/api/v1/inject" >/dev/null
# Stopped first: the delivery log is written at the stop, not before.
stop_spate
size=$(python3 - "$work/log" <<'EOF'
import json, pathlib, sys
for f in pathlib.Path(sys.argv[1]).glob("delivery-core*.jsonl"):
    for line in f.read_text().splitlines():
        r = json.loads(line)
        if r["type"] == "Reception":
            print(r["size"]); raise SystemExit
EOF
)
[ -n "$size" ] || { echo "perf/inject-http.sh: no Reception record to size the messages by" >&2; exit 1; }
hz=$(getconf CLK_TCK)

http_run() {
  start_spate
  token=$(cut -d: -f2 "$work/spool/admin.token")
  local before after t0 t1
  before=$(cpu_ticks); t0=$(date +%s.%N)
  seq "$requests" | xargs -P "$parallel" -I{} curl -sf -o /dev/null \
    -H "Authorization: Bearer $token" --data-binary @"$work/request.json" "http://$http/api/v1/inject"
  t1=$(date +%s.%N); after=$(cpu_ticks)
  stop_spate
  echo "$t0 $t1 $before $after"
}

smtp_run() {
  start_spate
  local before after t0 t1
  before=$(cpu_ticks); t0=$(date +%s.%N)
  smtp-source -s "$sessions" -m "$messages" -l "$size" -d -f bounces@shop.perf.test -t r@d1.perf.test "$addr"
  t1=$(date +%s.%N); after=$(cpu_ticks)
  stop_spate
  echo "$t0 $t1 $before $after"
}

figures() { # t0 t1 ticks_before ticks_after -> "msgs/s us_cpu_per_msg"
  python3 -c 'import sys; t0,t1,b,a=map(float,sys.argv[1:5]); n=int(sys.argv[5]); hz=int(sys.argv[6]); print(f"{n/(t1-t0):.0f} {(a-b)/hz/n*1e6:.1f}")' "$@" "$messages" "$hz"
}

echo "machine: $(nproc) CPUs, $(uname -r), spool on $(df --output=fstype "$PWD/target" | tail -1)"
echo "requests=$requests recipients=$recipients parallel=$parallel sessions=$sessions runs=$runs cores=$cores message=${size}B ($messages messages a run)"
http_rates=(); http_cpu=(); smtp_rates=(); smtp_cpu=()
for r in $(seq "$runs"); do
  read -r rate cpu < <(figures $(http_run)); http_rates+=("$rate"); http_cpu+=("$cpu")
  read -r rate cpu < <(figures $(smtp_run)); smtp_rates+=("$rate"); smtp_cpu+=("$cpu")
  echo "run $r: http ${http_rates[-1]} msgs/s ${http_cpu[-1]} us/msg; smtp ${smtp_rates[-1]} msgs/s ${smtp_cpu[-1]} us/msg"
done
median() { printf '%s\n' "$@" | sort -g | sed -n "$(( ($# + 1) / 2 ))p"; }
hr=$(median "${http_rates[@]}"); hc=$(median "${http_cpu[@]}")
sr=$(median "${smtp_rates[@]}"); sc=$(median "${smtp_cpu[@]}")
echo "median http: $hr msgs/s, $hc us CPU/msg"
echo "median smtp: $sr msgs/s, $sc us CPU/msg"
python3 -c 'import sys; a,b,c,d=map(float,sys.argv[1:]); print(f"http/smtp: {a/b:.2f}x the rate, {c/d:.2f}x the CPU per message")' "$hr" "$sr" "$hc" "$sc"
