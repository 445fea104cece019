//! Entry points for the cargo-fuzz targets in `fuzz/`: each runs one parser
//! of untrusted bytes (or DKIM signing, which parses a client's header
//! section) and checks what must always hold. None may panic; a
//! panic here is a bug the fuzzer found (add its input as a regression test).

use crate::config::{DkimDomain, DEFAULT_SIGNED_HEADERS};
use crate::dkim::Signers;
use crate::dns::answer;
use crate::listener::command;
use crate::listener::data::DataReceiver;
use hickory_proto::op::Message;
use hickory_proto::rr::{Name, RecordType};
use spool_format::{
    decode_record, decode_record_in, stamp, unstamp, Layout, MessageView, RecordKind, ScanItem,
    Scanner, StateRecord, RECORDS_OFFSET,
};

/// An Ed25519 key for tests and fuzzing only; it signs nothing real.
pub const TEST_ED25519_PEM: &[u8] = b"-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIIABDYuyVobwQ05j++ViVlGP6+vZ9CpNz0HjKiq34k4N
-----END PRIVATE KEY-----
";

/// DKIM signing of a whole message as a client sent it (header parsing,
/// From: selection, canonicalization): never a panic, and a signature,
/// when there is one, is whole header fields within the size bound.
pub fn dkim_sign(data: &[u8]) {
    static SIGNERS: std::sync::OnceLock<Signers> = std::sync::OnceLock::new();
    let signers = SIGNERS.get_or_init(|| {
        let table = DkimDomain {
            domain: "shop.example".into(),
            selector: "fuzz".into(),
            private_key: "fuzz.pem".into(),
            headers: DEFAULT_SIGNED_HEADERS
                .iter()
                .flat_map(|h| [h.to_string(), h.to_string()])
                .collect(),
        };
        Signers::from_pems(&[(table, TEST_ED25519_PEM.to_vec())]).expect("the test key loads")
    });
    // Half the inputs get a From: in the signing domain on top, so that
    // the signing path itself, not only the header parser, is reached.
    let mut message = Vec::with_capacity(data.len() + 32);
    if data.first().is_some_and(|b| b & 1 == 1) {
        message.extend_from_slice(b"From: a@shop.example\r\n");
    }
    message.extend_from_slice(data);
    if let Ok(Some(fields)) = signers.sign(&message) {
        assert!(fields.starts_with("DKIM-Signature: ") && fields.ends_with("\r\n"));
        assert!(fields.len() <= crate::dkim::SIGNATURE_FIELDS_MAX);
    }
}

/// The SMTP command parser, on one line.
pub fn smtp_command(data: &[u8]) {
    if let Ok(command::Command::Rcpt { to }) = command::parse(data) {
        assert!(to.len() <= command::PATH_BYTES_MAX && to.contains('@'));
    }
}

/// The DATA receiver, fed in the chunk sizes the first byte picks. Whatever
/// comes in, it never outputs more than it read and never ends data twice.
pub fn data_receiver(data: &[u8]) {
    let Some((&step, input)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut rx = DataReceiver::new(1 << 16);
    let mut out = Vec::new();
    let mut pos = 0;
    let mut buffered = 0;
    while pos < input.len() {
        let end = (pos + step).min(input.len());
        let window = &input[pos - buffered..end];
        let fed = rx.feed(window, &mut out);
        assert!(fed.consumed <= window.len());
        if fed.done.is_some() {
            break;
        }
        buffered = window.len() - fed.consumed;
        pos = end;
        if buffered > 4096 {
            break;
        }
    }
    assert!(out.len() <= input.len());
}

/// The delivery client's reply-line reader and EHLO keyword parser.
pub fn smtp_reply(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<String> = text
        .split('\n')
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect();
    for line in &lines {
        if let Some((code, _)) = crate::delivery::client::reply_line(line) {
            assert!((200..600).contains(&code));
        }
    }
    let _ = crate::delivery::client::Caps::parse(&lines);
}

/// A DNS reply as the resolver reads it, for MX, A and AAAA questions.
pub fn dns_reply(data: &[u8]) {
    let Ok(reply) = Message::from_vec(data) else {
        return;
    };
    let name = reply
        .queries
        .first()
        .map(|q| q.name().clone())
        .unwrap_or_else(Name::root);
    for qtype in [RecordType::MX, RecordType::A, RecordType::AAAA] {
        let _ = answer::interpret(&reply, &name, qtype);
    }
}

/// The spool record decoder, on one record and on a whole segment, in both
/// format versions; and a version 1 record stamped for version 2 decodes
/// there and unstamps to the same bytes.
pub fn spool_record(data: &[u8]) {
    let v2 = Layout::V2 { tag: 0x5350_4154 };
    if let Ok((header, _)) = decode_record(data) {
        let mut record = data[..header.record_bytes().min(data.len())].to_vec();
        stamp(&mut record, 0x5350_4154);
        assert!(decode_record_in(&record, v2).is_ok());
        unstamp(&mut record);
        assert_eq!(record, data[..record.len()]);
    }
    let _ = decode_record_in(data, v2);
    if let Ok((header, payload)) = decode_record(data) {
        match header.kind {
            RecordKind::Message => {
                if let Ok(m) = MessageView::decode(payload) {
                    assert_eq!(m.recipients().count() as u32, m.recipient_count);
                }
            }
            kind => {
                let _ = StateRecord::decode(kind, payload);
            }
        }
    }
    let mut segment = vec![0u8; RECORDS_OFFSET];
    segment.extend_from_slice(data);
    for layout in [Layout::V1, v2] {
        let mut end = RECORDS_OFFSET;
        for item in Scanner::new(&segment, layout) {
            if let ScanItem::Record { offset, header, .. } = item {
                assert!(offset >= end && offset + header.record_bytes() <= segment.len() + 8);
                end = offset;
            }
        }
    }
}

/// A complaint report from anyone (ARF, RFC 5965): never a panic, and
/// what it yields stays within the parser's bounds.
pub fn arf_report(data: &[u8]) {
    use crate::feedback::arf;
    if let Ok(r) = arf::parse(data) {
        assert!(r.feedback_type.len() <= arf::FEEDBACK_TYPE_CHARS_MAX);
        assert!(r.original_rcpt_to.len() <= arf::RCPT_TO_MAX);
        if let Some(c) = r.complainer() {
            assert!(c.len() <= arf::ADDRESS_BYTES_MAX);
        }
    }
}

/// An HTTP injection request (JSON, then its templates, then the MIME
/// message of its first recipient): never a panic; a message built is
/// CRLF text.
pub fn inject_request(data: &[u8]) {
    use crate::inject::{compose, request};
    let Ok(r) = request::parse(data, 10) else {
        return;
    };
    let Ok(t) = compose::Templates::compile(&r) else {
        return;
    };
    let Ok(rendered) = t.render(&r, 0, None, 1 << 20) else {
        return;
    };
    if let Ok(m) = compose::build(r.content.as_ref(), &rendered, 1, "fuzz.example", 0) {
        assert!(m.ends_with(b"\r\n") || m.is_empty());
    }
}
