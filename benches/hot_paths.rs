//! Cost per operation of spate's hot paths, without a bench framework:
//! `cargo bench --bench hot_paths`. Each line prints the median of 7 runs.
//!
//! What is measured: SMTP command parsing, the DATA receiver (end-of-data
//! search and dot-unstuffing) on a 4 KiB message, outbound dot-stuffing,
//! queue memory per message, spool record encode and
//! decode of a 4 KiB message, DKIM signing (RSA-2048 and Ed25519), domain → core hashing, and group commit on the
//! real disk (records per fdatasync with 1 and 20 concurrent appenders).

use spate::listener::command;
use spate::listener::data::DataReceiver;
use spate::router::owner_of;
use spate::spool::{Faults, IdSpace, Settings, Spool};
use spool_format::{decode_record, MessageBuilder, MessageView};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn median_ns(iters: u64, mut f: impl FnMut()) -> f64 {
    let mut runs: Vec<f64> = (0..7)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            start.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    runs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    runs[3]
}

fn report(name: &str, ns: f64) {
    println!("{name:<44} {ns:>10.1} ns/op");
}

fn message_4k() -> Vec<u8> {
    let mut m = b"Subject: bench\r\nFrom: a@b.test\r\n\r\n".to_vec();
    while m.len() < 4096 {
        m.extend_from_slice(
            b".a line of seventy-odd characters of body text, some starting with dots\r\n",
        );
    }
    m
}

fn main() {
    let lines = [
        "MAIL FROM:<sender@example.org> SIZE=4096 BODY=8BITMIME",
        "RCPT TO:<someone.somewhere@mailbox.example.com>",
        "EHLO client.example.net",
    ];
    report(
        "command::parse (MAIL/RCPT/EHLO mix)",
        median_ns(300_000, || {
            for l in &lines {
                black_box(command::parse(black_box(l.as_bytes())).unwrap());
            }
        }) / 3.0,
    );

    let mut wire = Vec::new();
    for line in message_4k().split_inclusive(|&b| b == b'\n') {
        if line[0] == b'.' {
            wire.push(b'.');
        }
        wire.extend_from_slice(line);
    }
    wire.extend_from_slice(b".\r\n");
    let mut out = Vec::with_capacity(8192);
    report(
        "DataReceiver::feed, 4 KiB dot-stuffed",
        median_ns(100_000, || {
            out.clear();
            let mut rx = DataReceiver::new(1 << 20);
            black_box(rx.feed(black_box(&wire), &mut out));
        }),
    );

    let body = message_4k();
    let mut stuffed = Vec::with_capacity(8192);
    report(
        "dot::stuff_into (outbound dot-stuffing), 4 KiB",
        median_ns(100_000, || {
            stuffed.clear();
            spate::dot::stuff_into(black_box(&body), &mut stuffed);
        }),
    );
    let mut buf = Vec::with_capacity(8192);
    report(
        "MessageBuilder encode + CRC32C, 4 KiB",
        median_ns(100_000, || {
            let mut b = MessageBuilder::new(
                std::mem::take(&mut buf),
                1,
                0,
                b"sender@example.org",
                &[b"rcpt@example.com"],
            );
            b.body_mut().extend_from_slice(&body);
            buf = b.finish(black_box(7));
        }),
    );
    report(
        "decode_record + MessageView, 4 KiB",
        median_ns(100_000, || {
            let (_, payload) = decode_record(black_box(&buf)).unwrap();
            black_box(MessageView::decode(payload).unwrap());
        }),
    );

    for (name, genpkey) in [
        ("RSA-2048", "-algorithm RSA -pkeyopt rsa_keygen_bits:2048"),
        ("Ed25519", "-algorithm ed25519"),
    ] {
        let signers = dkim_signers(genpkey);
        let message = String::from_utf8(body.clone())
            .unwrap()
            .replace("From: a@b.test", "From: news@shop.example")
            .into_bytes();
        report(
            &format!("DKIM sign ({name}), 4 KiB"),
            median_ns(if name == "Ed25519" { 2_000 } else { 50 }, || {
                black_box(signers.sign(black_box(&message)).unwrap().unwrap());
            }),
        );
    }

    let domains: Vec<String> = (0..1000)
        .map(|i| format!("mailbox-provider-{i}.example"))
        .collect();
    report(
        "owner_of (FNV-1a + jump hash, 16 cores)",
        median_ns(1_000, || {
            for d in &domains {
                black_box(owner_of(black_box(d), 16));
            }
        }) / 1000.0,
    );

    for recipients in [1usize, 10] {
        println!(
            "queue memory, {recipients:>2} recipient(s) per message        {:>10.0} bytes/message",
            queued_bytes_per_message(recipients)
        );
    }

    for appenders in [1usize, 20] {
        let (per_record, per_sync) = group_commit(appenders, 2000);
        println!("group commit, {appenders:>2} appenders, 4 KiB records     {:>10.1} us/record  {per_sync:>6.1} records/fdatasync", per_record.as_nanos() as f64 / 1000.0);
    }
}

/// Signers for `shop.example` with a key that openssl makes now.
fn dkim_signers(genpkey: &str) -> spate::dkim::Signers {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("key.pem");
    let made = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl genpkey {genpkey} -out {} 2>/dev/null",
            pem.display()
        ))
        .status()
        .expect("openssl");
    assert!(made.success(), "openssl genpkey {genpkey}");
    let domain = spate::config::DkimDomain {
        domain: "shop.example".into(),
        selector: "s1".into(),
        private_key: pem,
        headers: spate::config::DEFAULT_SIGNED_HEADERS
            .iter()
            .map(|h| h.to_string())
            .collect(),
    };
    spate::dkim::Signers::load(&[domain]).unwrap()
}

/// Appends `total` 4 KiB records from `appenders` concurrent tasks to a real
/// spool under the current directory's `target/`, so the disk is the one the
/// spool would be on.
fn group_commit(appenders: usize, total: usize) -> (Duration, f64) {
    let dir = tempfile::tempdir_in("target").unwrap();
    let path = dir.path().to_path_buf();
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let spool = Spool::open(
                path,
                Settings::manual(64 << 20),
                0,
                IdSpace::new(1, 0, 1),
                Vec::new(),
                Faults::default(),
            )
            .await
            .unwrap();
            let start = Instant::now();
            let tasks: Vec<_> = (0..appenders)
                .map(|_| {
                    let spool = spool.clone();
                    glommio::spawn_local(async move {
                        for _ in 0..total / appenders {
                            let mut b = MessageBuilder::new(
                                Vec::with_capacity(4200),
                                1,
                                0,
                                b"s@a.test",
                                &[b"r@b.test"],
                            );
                            b.body_mut().extend_from_slice(&message_4k());
                            spool
                                .append(b.finish(spool.next_message_id()))
                                .await
                                .unwrap();
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await;
            }
            let elapsed = start.elapsed();
            let syncs = spool.stats.syncs.get().max(1) as f64;
            (
                elapsed / total as u32,
                spool.stats.records.get() as f64 / syncs,
            )
        })
        .unwrap()
        .join()
        .unwrap()
}

/// Resident memory added per queued message (handle, queue entry; the
/// addresses stay in the record), measured over 200,000 messages whose
/// records (about 30-byte addresses) sit in one mapping made beforehand.
fn queued_bytes_per_message(recipients: usize) -> f64 {
    use spate::message::{MessageHandle, Recipient, SegmentMap, Stored};
    use std::sync::Arc;
    let rss = || {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        statm
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<f64>()
            .unwrap()
            * 4096.0
    };
    let count = 200_000;
    let mut records = Vec::new();
    let mut places = Vec::with_capacity(count);
    for i in 0..count {
        let rcpts: Vec<String> = (0..recipients)
            .map(|r| format!("user{i:07}.{r}@mailbox{}.example", i % 1000))
            .collect();
        let rcpts: Vec<&[u8]> = rcpts.iter().map(|r| r.as_bytes()).collect();
        let mut b = spool_format::MessageBuilder::new(
            Vec::new(),
            0,
            0,
            b"bounces+campaign-42@sender.example",
            &rcpts,
        );
        b.body_mut().extend_from_slice(&[b'x'; 64]);
        let (start, len) = (b.body_start(), b.body_len());
        let record = b.finish(i as u64);
        places.push((records.len(), record.len(), start, len));
        records.extend_from_slice(&record);
    }
    let segment = Arc::new(SegmentMap::anonymous(1, &records).unwrap());
    drop(records);
    let queues = spate::queue::Queues::new(0);
    let before = rss();
    for (i, (offset, record_len, body_start, body_len)) in places.drain(..).enumerate() {
        let stored = Stored::new(
            i as u64,
            record_len,
            body_start,
            body_len,
            recipients as u32,
        );
        stored.place(&segment, offset as u64);
        queues.enqueue(MessageHandle {
            id: i as u64,
            stored,
            recipients: Recipient::first_attempts(recipients),
        });
    }
    let grown = rss() - before;
    black_box(&queues);
    grown / count as f64
}
