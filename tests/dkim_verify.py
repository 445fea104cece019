#!/usr/bin/python3
"""Verifies each DKIM-Signature of the message on stdin with dkimpy, the
verifier of Debian's python3-dkim, looking the keys up in one DNS server.

    dkim_verify.py DNS_IP DNS_PORT < message

Prints one line per signature, in header order: "d=DOMAIN s=SELECTOR
pass" or "... fail". The message may have LF line ends (as smtp-sink dumps
it); they are turned back into CRLF first.
"""
import re
import sys

import dkim
import dns.resolver

resolver = dns.resolver.Resolver(configure=False)
resolver.nameservers = [sys.argv[1]]
resolver.port = int(sys.argv[2])


def txt(name, timeout=5):
    name = name.decode() if isinstance(name, bytes) else name
    answer = resolver.resolve(name, "TXT", lifetime=timeout)
    return b"".join(answer[0].strings)


message = sys.stdin.buffer.read().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
verifier = dkim.DKIM(message)
signatures = [v for (k, v) in verifier.headers if k.lower() == b"dkim-signature"]
for idx, value in enumerate(signatures):
    tag = lambda t: (re.search(rb"(?:^|;)\s*" + t + rb"=\s*([^;\s]*)", value) or [b"", b"?"])[1]
    try:
        ok = verifier.verify(idx=idx, dnsfunc=txt)
    except Exception:  # a malformed signature is a failed one
        ok = False
    print(f"d={tag(b'd').decode()} s={tag(b's').decode()} {'pass' if ok else 'fail'}")
