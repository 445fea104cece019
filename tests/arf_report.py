#!/usr/bin/python3
"""Builds a complaint report in the Abuse Reporting Format (RFC 5965), the
way a mailbox provider's feedback loop sends one, with Python's own mail
library (the standard `email` package), so that spate's parser
(src/feedback/arf.rs) is tested against MIME it did not write itself.

    arf_report.py --original FILE --to ADDR [--feedback-type abuse]
                  [--rcpt ADDR]... [--reporting-mta NAME] [--headers-only]
                  [--source-ip IP] [--from ADDR] [--user-agent TEXT]
                  [--date DATE] [--boundary TEXT] [--message-id ID]

Reads the original message, as delivered, from FILE and writes the report
to stdout with CRLF line ends:

  1. text/plain: a human-readable note;
  2. message/feedback-report: Feedback-Type, User-Agent, Version,
     Original-Mail-From (the original's Return-Path, if any),
     Original-Rcpt-To (one per --rcpt; none without it: many providers
     redact it), Arrival-Date (the original's Date), Reporting-MTA,
     Source-IP, Reported-Domain (the domain of the original's From);
  3. the original: message/rfc822, or text/rfc822-headers with
     --headers-only (its header only, as some providers send).

--date, --boundary and --message-id make the output reproducible (the
library picks a random boundary and Message-ID otherwise). The fixtures in
tests/data/arf/ were made with:

    D=tests/data/arf; DATE='Sat, 05 Dec 2026 09:00:00 +0000'
    python3 tests/arf_report.py --original $D/original-relayed.eml \\
      --to fbl@spate.example --rcpt bob@example.com \\
      --reporting-mta mx.provider.example --source-ip 192.0.2.25 \\
      --date "$DATE" --boundary arf-abuse \\
      --message-id '<r1@feedback.provider.example>' > $D/abuse.eml
    python3 tests/arf_report.py --original $D/original-relayed.eml \\
      --to fbl@spate.example --rcpt bob@example.com --headers-only \\
      --feedback-type fraud --date "$DATE" --boundary arf-headers \\
      --message-id '<r2@feedback.provider.example>' > $D/headers-only.eml
    python3 tests/arf_report.py --original $D/original-composed.eml \\
      --to fbl@spate.example --date "$DATE" --boundary arf-norcpt \\
      --message-id '<r3@feedback.provider.example>' > $D/no-rcpt-to.eml

not-a-report.eml and missing-feedback-type.eml are written by hand.
"""
import argparse
import re
import sys
from email import policy
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.mime.text import MIMEText
from email.parser import BytesParser
from email.utils import formatdate, make_msgid, parseaddr

# Header fields are kept as the original had them: a report carries the
# message as delivered, and refolding would change what the parser sees.
POLICY = policy.SMTP.clone(refold_source="none")

PROVIDER = "feedback.provider.example"


def arguments():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--original", required=True, help="the message as delivered")
    p.add_argument("--to", required=True, help="where the report goes")
    p.add_argument("--feedback-type", default="abuse")
    p.add_argument("--rcpt", action="append", default=[], help="Original-Rcpt-To (repeatable)")
    p.add_argument("--reporting-mta", help="Reporting-MTA's host name")
    p.add_argument("--headers-only", action="store_true", help="text/rfc822-headers")
    p.add_argument("--source-ip", help="Source-IP")
    p.add_argument("--from", dest="sender", default=f"Feedback Loop <fbl@{PROVIDER}>")
    p.add_argument("--user-agent", default="ExampleFBL/1.0")
    p.add_argument("--date", default=formatdate(usegmt=True))
    p.add_argument("--boundary", help="MIME boundary (default: random)")
    p.add_argument("--message-id", default=make_msgid(domain=PROVIDER))
    return p.parse_args()


def feedback_fields(args, original):
    """The message/feedback-report part's fields, in RFC 5965's order."""
    fields = [
        ("Feedback-Type", args.feedback_type),
        ("User-Agent", args.user_agent),
        ("Version", "1"),
    ]
    return_path = parseaddr(str(original.get("Return-Path", "")))[1]
    if return_path:
        fields.append(("Original-Mail-From", f"<{return_path}>"))
    fields += [("Original-Rcpt-To", f"<{rcpt}>") for rcpt in args.rcpt]
    if original.get("Date"):
        fields.append(("Arrival-Date", str(original["Date"])))
    if args.reporting_mta:
        fields.append(("Reporting-MTA", f"dns; {args.reporting_mta}"))
    if args.source_ip:
        fields.append(("Source-IP", args.source_ip))
    domain = reported_domain(original)
    if domain:
        fields.append(("Reported-Domain", domain))
    return fields


def reported_domain(original):
    address = parseaddr(str(original.get("From", "")))[1]
    return address.rpartition("@")[2] if "@" in address else None


def feedback_part(fields):
    part = MIMENonMultipart("message", "feedback-report")
    text = "".join(f"{name}: {value}\r\n" for name, value in fields)
    if not text.isascii():
        # The generator writes a message/* payload as ASCII; UTF-8 fields
        # (SMTPUTF8 addresses) would need RFC 6533's types, not built here.
        sys.exit("arf_report.py: feedback fields must be ASCII")
    part.set_payload(text)
    return part


def original_part(raw, original, headers_only):
    if not headers_only:
        return MIMEMessage(original)
    end = re.search(rb"\r?\n\r?\n", raw)
    header = raw[: end.end()] if end else raw
    text = header.decode("utf-8", errors="replace")
    charset = "us-ascii" if text.isascii() else "utf-8"
    return MIMEText(text, "rfc822-headers", charset)


def report(args):
    with open(args.original, "rb") as f:
        raw = f.read()
    original = BytesParser(policy=POLICY).parsebytes(raw)
    fields = feedback_fields(args, original)
    about = args.source_ip or reported_domain(original) or "an unknown sender"

    msg = MIMEMultipart(
        "report", boundary=args.boundary, policy=POLICY, report_type="feedback-report"
    )
    msg["From"] = args.sender
    msg["To"] = args.to
    msg["Subject"] = f"Complaint about message from {about}"
    msg["Date"] = args.date
    msg["Message-ID"] = args.message_id
    msg.preamble = "This is a multi-part message in MIME format."
    note = (
        f"This is an email abuse report for an email message received from {about}.\n"
        "A user of this mailbox provider marked it as unwanted.\n"
    )
    msg.attach(MIMEText(note, "plain", "us-ascii"))
    msg.attach(feedback_part(fields))
    msg.attach(original_part(raw, original, args.headers_only))
    return msg.as_bytes(policy=POLICY)


def main():
    out = report(arguments())
    # The generator writes string payloads of message/* parts as they are;
    # make every line end CRLF, as on the wire.
    sys.stdout.buffer.write(re.sub(rb"\r?\n", b"\r\n", out))


if __name__ == "__main__":
    main()
