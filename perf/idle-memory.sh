#!/usr/bin/env bash
# Memory a connection holds while it idles: opens CONNECTIONS SMTP
# connections to `spate serve --cores 2` (from as many loopback addresses as
# the per-address limit needs), reads each greeting, sends EHLO, reads the
# reply, and reads spate's anonymous memory (RssAnon) before and after.
# Then closes them and does it again ROUNDS times: a second round shows
# what the memory freed by the first costs when reused (a buffer that is
# zeroed on reuse is touched again, one that is not stays as it was).
#
#   perf/idle-memory.sh [CONNECTIONS] [ROUNDS]
#   BINS="after=target/release/spate before=/tmp/spate-old" perf/idle-memory.sh 1000 3
#
# Needs python3 and a descriptor limit above CONNECTIONS.
set -euo pipefail
cd "$(dirname "$0")/.."
connections=${1:-1000}; rounds=${2:-3}
bins=${BINS:-}
if [ -z "$bins" ]; then cargo build --release --quiet; bins="spate=$PWD/target/release/spate"; fi
ulimit -n "$(ulimit -Hn)"
work=$(mktemp -d -p "$PWD/target" idle-memory.XXXXXX)
addr=127.0.0.1:25321
cleanup() { kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

cat >"$work/idle.py" <<'PY'
import socket, sys
pid, n, port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def anon():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("RssAnon"):
            return int(line.split()[1])
before = anon()
socks = []
for i in range(n):
    # 200 connections an address at most (max_connections_per_ip).
    src = (f"127.0.{1 + i // 200}.{1 + i % 200}", 0)
    socks.append(socket.create_connection(("127.0.0.1", port), source_address=src))
for s in socks:
    f = s.makefile("rb")
    line = f.readline()
    assert line.startswith(b"220"), line
    s.sendall(b"EHLO idle.test\r\n")
    line = f.readline()
    while line[3:4] == b"-":
        line = f.readline()
    assert line.startswith(b"250"), line
after = anon()
print(f"{before},{after},{(after - before) * 1024 / n:.0f}")
PY

echo "setting,round,rss_anon_before_kib,rss_anon_after_kib,bytes_per_connection"
for b in $bins; do
  label=${b%%=*}; path=${b#*=}
  rm -rf "$work/spool" "$work/log"
  "$path" serve --cores 2 --listen "$addr" --smarthost 127.0.0.1:9 --dns 127.0.0.1:9 --admin "" \
    --spool "$work/spool" --log-dir "$work/log" 2>"$work/spate.txt" &
  pid=$!
  until grep -q "spate: ready" "$work/spate.txt"; do sleep 0.05; done
  for r in $(seq "$rounds"); do
    # The last round's sessions end when spate closes their sockets: then
    # no server side is left established or waiting to close.
    while [ -n "$(ss -Htn state established state close-wait "( sport = :${addr##*:} )")" ]; do
      sleep 0.05
    done
    echo "$label,$r,$(python3 "$work/idle.py" "$pid" "$connections" "${addr##*:}")"
  done
  kill -TERM "$pid"; wait "$pid" || true
done
