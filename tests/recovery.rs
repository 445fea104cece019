//! Restart recovery: acknowledged messages survive kill -9, torn tails are
//! cut, corrupt records are skipped and reported, unknown versions refused.

mod common;
use common::*;
use spool_format::{ScanItem, Scanner, SegmentHeader};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn pending_line(spate: &Spate) -> String {
    spate.wait_for_log("recipients to deliver", Duration::from_secs(10))
}

/// The segment files of a spool (it holds other files and directories
/// too: the lock, the admin token, the suppression journals).
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .collect();
    v.sort();
    v
}

#[test]
fn kill_9_after_acknowledged_messages_then_restart_recovers_all() {
    require("smtp-source");
    let mut spate = Spate::start(&[]);
    let (ok, out) = run(
        "smtp-source",
        &[
            "-s",
            "8",
            "-m",
            "400",
            "-d",
            "-l",
            "4096",
            "-f",
            "s@a.test",
            "-t",
            "r@b.test",
            &spate.addr,
        ],
    );
    assert!(ok, "every message was acknowledged: {out}");
    spate.kill9();
    spate.launch();
    let line = pending_line(&spate);
    assert!(
        line.contains("400 messages, 400 recipients to deliver"),
        "{line}"
    );
    assert_eq!(read_spool(&spate.spool_dir()).len(), 400);
    // A second crash and restart finds the same, and the new core segments
    // never collide with the old ones.
    spate.kill9();
    spate.launch();
    assert!(pending_line(&spate).contains("400 messages, 400 recipients"));
    let mut smtp = spate.connect();
    smtp.transaction("s@a.test", &["r@b.test"], b"Subject: after\r\n\r\nx\r\n");
    assert_eq!(spate.stop(), 0);
    assert_eq!(read_spool(&spate.spool_dir()).len(), 401);
    let (clean, report) = spate_cmd(&["spool", "verify", spate.spool_dir().to_str().unwrap()]);
    assert!(clean, "{report}");
}

/// Offsets of the records in a segment file.
fn record_offsets(seg: &Path) -> Vec<(usize, usize)> {
    let bytes = std::fs::read(seg).unwrap();
    let layout = SegmentHeader::decode(&bytes).unwrap().layout();
    Scanner::new(&bytes, layout)
        .filter_map(|i| match i {
            ScanItem::Record { offset, header, .. } => Some((offset, header.record_bytes())),
            _ => None,
        })
        .collect()
}

/// A spool holding `n` messages and nothing else: delivery goes to a host
/// that accepts TCP but never greets, so no state record is written before
/// the kill -9.
///
/// Reclamation is off, in this run and in every relaunch: after a restart
/// the old segment is closed and its few messages would be compacted into
/// the new active segment and the old one deleted, about a second on, and
/// with it the damage a test put there and asks recovery and verify about.
fn spool_with_messages(n: usize) -> Spate {
    let tarpit = std::net::TcpListener::bind(free_addr()).unwrap();
    let hop = tarpit.local_addr().unwrap().to_string();
    let cfg = tempfile::tempdir().unwrap().keep().join("c.toml");
    std::fs::write(
        &cfg,
        "[delivery]\nconnect_timeout_secs = 3600\n[spool]\nreclaim_interval_ms = 0\n",
    )
    .unwrap();
    let mut spate = Spate::start(&[
        "--cores",
        "1",
        "--smarthost",
        &hop,
        "--config",
        cfg.to_str().unwrap(),
    ]);
    let mut smtp = spate.connect();
    for i in 0..n {
        smtp.transaction(
            "s@a.test",
            &["r@b.test"],
            format!("Subject: {i}\r\n\r\nbody {i}\r\n").as_bytes(),
        );
    }
    spate.kill9();
    spate
}

fn patch(path: &Path, offset: usize, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset as u64).unwrap();
}

#[test]
fn torn_tail_is_cut_and_the_spool_verifies_clean_after() {
    let mut spate = spool_with_messages(3);
    let seg = segments(&spate.spool_dir()).pop().unwrap();
    let recs = record_offsets(&seg);
    let (last, len) = *recs.last().unwrap();
    // A write the crash cut short: the last record's second half is gone.
    patch(&seg, last + len / 2, &vec![0u8; len - len / 2]);
    let (clean, _) = spate_cmd(&["spool", "verify", spate.spool_dir().to_str().unwrap()]);
    assert!(!clean, "verify notices the torn tail");
    spate.launch();
    let line = pending_line(&spate);
    assert!(
        line.contains("2 messages") && line.contains("1 torn tails cut"),
        "{line}"
    );
    assert_eq!(spate.stop(), 0);
    let (clean, report) = spate_cmd(&["spool", "verify", spate.spool_dir().to_str().unwrap()]);
    assert!(clean, "{report}");
}

#[test]
fn flipped_byte_in_a_middle_record_is_skipped_and_later_records_kept() {
    let mut spate = spool_with_messages(3);
    let seg = segments(&spate.spool_dir()).pop().unwrap();
    let (middle, _) = record_offsets(&seg)[1];
    let mut byte = [0u8];
    std::os::unix::fs::FileExt::read_exact_at(
        &std::fs::File::open(&seg).unwrap(),
        &mut byte,
        middle as u64 + 40,
    )
    .unwrap();
    patch(&seg, middle + 40, &[byte[0] ^ 0x20]);
    spate.launch();
    let line = pending_line(&spate);
    assert!(
        line.contains("2 messages") && line.contains("1 corrupt records skipped"),
        "{line}"
    );
    spate.wait_for_log(
        &format!("corrupt record at offset {middle}"),
        Duration::from_secs(5),
    );
    let bodies: Vec<String> = read_spool(&spate.spool_dir())
        .iter()
        .map(|m| String::from_utf8_lossy(m.client_body()).into_owned())
        .collect();
    assert!(
        bodies[0].contains("body 0") && bodies[1].contains("body 2"),
        "{bodies:?}"
    );
    // verify reads a spool at rest.
    assert_eq!(spate.stop(), 0);
    let (clean, report) = spate_cmd(&["spool", "verify", spate.spool_dir().to_str().unwrap()]);
    assert!(
        !clean && report.contains("corrupt"),
        "verify keeps reporting the damage: {report}"
    );
}

#[test]
fn truncated_segment_keeps_what_remains_and_is_reported() {
    let mut spate = spool_with_messages(3);
    let seg = segments(&spate.spool_dir()).pop().unwrap();
    let (third, _) = record_offsets(&seg)[2];
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(third as u64 + 10)
        .unwrap();
    spate.launch();
    let line = pending_line(&spate);
    assert!(
        line.contains("2 messages") && line.contains("1 truncated segments"),
        "{line}"
    );
    // verify reads a spool at rest.
    assert_eq!(spate.stop(), 0);
    let (clean, report) = spate_cmd(&["spool", "verify", spate.spool_dir().to_str().unwrap()]);
    assert!(!clean && report.contains("truncated"), "{report}");
}

#[test]
fn spool_from_an_unknown_format_version_is_refused() {
    let spate = spool_with_messages(1);
    let seg = segments(&spate.spool_dir()).pop().unwrap();
    patch(&seg, 8, &7u32.to_le_bytes());
    let (ok, out) = spate_cmd(&[
        "serve",
        "--listen",
        &free_addr(),
        "--spool",
        spate.spool_dir().to_str().unwrap(),
        "--log-dir",
        spate.dir.path().join("log").to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(out.contains("unknown spool format version 7"), "{out}");
}

#[test]
fn spool_dump_lists_records_as_json_lines() {
    let spate = spool_with_messages(2);
    let (ok, out) = spate_cmd(&["spool", "dump", spate.spool_dir().to_str().unwrap()]);
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2);
    for l in lines {
        assert!(
            l.starts_with('{')
                && l.contains("\"kind\":\"Message\"")
                && l.contains("\"recipients\":[\"r@b.test\"]"),
            "{l}"
        );
    }
}

/// Reclamation in the running engine, with recipients on both cores: once
/// everything deliverable is delivered, old segments are deleted (the
/// messages still deferred are moved forward, and the outcomes that still
/// count with them). After a restart nothing delivered is delivered again
/// and exactly the deferred recipients are still owed.
#[test]
fn reclaimed_spool_restarts_owing_exactly_the_deferred_recipients() {
    let sink = Sink::start(&free_addr(), &[]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[spool]\nsegment_bytes = 393216\nreclaim_interval_ms = 50\n\
         [delivery]\nretry_initial_secs = 3600\nretry_max_secs = 3600\n",
    )
    .unwrap();
    let mut args: Vec<String> = [
        "--cores",
        "2",
        "--max-message-size",
        "10000",
        "--config",
        cfg.to_str().unwrap(),
        // A closed port: deferred, and not retried for an hour.
        "--route",
        "slow.test=127.0.0.1:9",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for k in 0..8 {
        args.push("--route".into());
        args.push(format!("good{k}.test={}", sink.addr));
    }
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let mut spate = Spate::start(&args);
    // About 4 KiB: 50 lines of 80 octets.
    let body = format!(
        "Subject: reclaim\r\n\r\n{}",
        format!("{}\r\n", "z".repeat(78)).repeat(50)
    );
    let mut smtp = spate.connect();
    // The body and the final dot go in two writes: without this, Nagle
    // and delayed ACKs cost the client 40 ms a message.
    smtp.stream.set_nodelay(true).unwrap();
    for i in 0..400 {
        let good = format!("r{i}@good{}.test", i % 8);
        let slow = format!("r{i}@slow.test");
        let to: Vec<&str> = if i % 10 == 0 {
            vec![&good, &slow]
        } else {
            vec![&good]
        };
        smtp.transaction("s@a.test", &to, body.as_bytes());
    }
    drop(smtp);
    wait_until(Duration::from_secs(60), "400 deliveries", || {
        sink.count() == 400
    });
    wait_until(Duration::from_secs(30), "40 deferrals", || {
        log_of(&spate.log_dir(), "TransientFailure").len() == 40
    });
    // 400 × 4 KiB filled several 384 KiB segments per core; what is left
    // is each core's active segment and the one it moved into, or little more.
    let segment_count = || {
        segments(&spate.spool_dir())
            .iter()
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
            .count()
    };
    wait_until(Duration::from_secs(30), "old segments reclaimed", || {
        segment_count() <= 4
    });
    assert_eq!(spate.stop(), 0);
    let (clean, report) = spate_cmd(&["spool", "verify", spate.spool_dir().to_str().unwrap()]);
    assert!(clean, "{report}");
    spate.launch();
    let line = pending_line(&spate);
    assert!(line.contains(" 40 recipients to deliver"), "{line}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sink.count(), 400, "nothing delivered is delivered again");
    assert_eq!(spate.stop(), 0);
}

/// The sum over the cores of one counter of `/metrics`.
fn counter(spate: &Spate, name: &str) -> f64 {
    let text = ureq::get(format!("{}/metrics", spate.admin_url()))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Reclaimed segment files are written over as later segments (format
/// version 2) in the running engine. Rounds of mail go through small
/// segments until spate's counter says it reused two. Then the spool
/// verifies clean, and the restart owes nothing and makes its first
/// segment of a spare file the run left.
#[test]
fn reclaimed_segment_files_are_reused_and_the_spool_recovers_clean() {
    let sink = Sink::start(&free_addr(), &[]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[spool]\nsegment_bytes = 294912\nreclaim_interval_ms = 50\n",
    )
    .unwrap();
    let mut spate = Spate::start(&[
        "--cores",
        "1",
        "--max-message-size",
        "10000",
        "--config",
        cfg.to_str().unwrap(),
        "--smarthost",
        &sink.addr,
    ]);
    let body = format!(
        "Subject: reuse\r\n\r\n{}",
        format!("{}\r\n", "z".repeat(78)).repeat(50)
    );
    let name = "spate_spool_segments_recycled_total";
    let (mut sent, mut recycled) = (0, 0.0);
    // 80 messages of 4 KiB fill more than one 288 KiB segment a round (the
    // smallest that takes a message of 10,000 bytes).
    for _ in 0..30 {
        let mut smtp = spate.connect();
        smtp.stream.set_nodelay(true).unwrap();
        for _ in 0..80 {
            smtp.transaction("s@a.test", &["r@b.test"], body.as_bytes());
        }
        drop(smtp);
        sent += 80;
        wait_until(Duration::from_secs(60), "the round delivered", || {
            sink.count() == sent
        });
        recycled = counter(&spate, name);
        if recycled >= 2.0 {
            break;
        }
    }
    assert!(
        recycled >= 2.0,
        "{recycled} segments reused after {sent} messages"
    );
    assert_eq!(spate.stop(), 0);
    let (clean, report) = spate_cmd(&["spool", "verify", spate.spool_dir().to_str().unwrap()]);
    assert!(clean, "{report}");
    // The spares this run left: the next run finds them, and its first
    // segment is made of one.
    let spares = std::fs::read_dir(spate.spool_dir())
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("spare-")
        })
        .count();
    spate.launch();
    let line = pending_line(&spate);
    assert!(
        line.contains(" 0 recipients to deliver")
            && line.contains(&format!(" {spares} spare segment files")),
        "{line}"
    );
    let reused = if spares > 0 { 1.0 } else { 0.0 };
    assert_eq!(counter(&spate, name), reused);
    assert_eq!(spate.stop(), 0);
    assert_eq!(sink.count(), sent, "nothing delivered is delivered again");
}
