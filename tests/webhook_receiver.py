#!/usr/bin/python3
"""A webhook receiver for tests/webhooks.rs, on Python's http.server.

usage: webhook_receiver.py ADDR:PORT SECRET_FILE OUT_FILE [--fail N] [--hang N --hang-s S]
                           [--tls CERT KEY]

Every POST is checked (X-Spate-Signature against its own HMAC-SHA256 of
the body with the secret) and appended to OUT_FILE as one JSON line:
{"status": 200 | 500 | "hung", "batch", "webhook", "sig_ok", "body"}.
The first N requests of this process are answered 500 (--fail); the next
N after those hang (--hang): the handler sleeps S seconds and closes the
connection without an answer. Everything after is answered 200, and the
line is written before the answer is sent. HTTP/1.1, so spate may keep
its connection; one thread per connection, so a hung one blocks no other.
With --tls it speaks HTTPS with that certificate and key (PEM).
"""
import argparse
import hashlib
import hmac
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

p = argparse.ArgumentParser()
p.add_argument("addr")
p.add_argument("secret_file")
p.add_argument("out")
p.add_argument("--fail", type=int, default=0)
p.add_argument("--hang", type=int, default=0)
p.add_argument("--hang-s", type=float, default=3.0)
p.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
args = p.parse_args()

with open(args.secret_file, "rb") as f:
    SECRET = f.read().rstrip(b"\r\n")
LOCK = threading.Lock()
SEEN = [0]
OUT = open(args.out, "a", encoding="utf-8")


def record(entry):
    with LOCK:
        OUT.write(json.dumps(entry) + "\n")
        OUT.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        want = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        got = self.headers.get("X-Spate-Signature", "")
        with LOCK:
            n = SEEN[0]
            SEEN[0] += 1
        if n < args.fail:
            status = 500
        elif n < args.fail + args.hang:
            status = "hung"
        else:
            status = 200
        entry = {
            "status": status,
            "batch": self.headers.get("X-Spate-Batch"),
            "webhook": self.headers.get("X-Spate-Webhook"),
            "content_type": self.headers.get("Content-Type"),
            "sig_ok": hmac.compare_digest(want, got),
            "body": json.loads(body),
        }
        record(entry)
        if status == "hung":
            time.sleep(args.hang_s)
            self.close_connection = True
            return
        answer = b'{"ok": true}' if status == 200 else b'{"error": "test failure"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *a):
        pass


host, port = args.addr.rsplit(":", 1)
ThreadingHTTPServer.daemon_threads = True
server = ThreadingHTTPServer((host, int(port)), Handler)
if args.tls:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*args.tls)
    server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
