//! Crash safety under load: a client injects continuously and records every
//! 250 it gets while `spate serve` is killed with SIGKILL at random moments
//! and restarted, 20 times, while small segments are created and reclaimed
//! all the time. At the end every acknowledged message has reached the sink
//! at least once, the reclaimer has deleted the old segments, and the spool
//! verifies clean.
//!
//! `SPATE_CRASH_ROUNDS` raises the number of crashes for a longer soak.

mod common;
use common::*;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Sends messages numbered from `first` on until told to stop, reconnecting
/// after any error, and records the numbers that got a 250.
fn inject(addr: String, first: u64, stop: Arc<AtomicBool>, acked: Arc<Mutex<BTreeSet<u64>>>) {
    let mut n = first;
    while !stop.load(Ordering::SeqCst) {
        let Ok(stream) = TcpStream::connect(&addr) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut w = stream;
        let reply = |r: &mut BufReader<TcpStream>| -> Option<u16> {
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).ok()? == 0 {
                    return None;
                }
                if line.as_bytes().get(3) != Some(&b'-') {
                    return line.get(..3)?.parse().ok();
                }
            }
        };
        if reply(&mut reader) != Some(220)
            || w.write_all(b"EHLO crash.test\r\n").is_err()
            || reply(&mut reader) != Some(250)
        {
            continue;
        }
        while !stop.load(Ordering::SeqCst) {
            n += 1;
            let tx = b"MAIL FROM:<s@a.test>\r\nRCPT TO:<r@b.test>\r\nDATA\r\n";
            if w.write_all(tx).is_err()
                || reply(&mut reader) != Some(250)
                || reply(&mut reader) != Some(250)
                || reply(&mut reader) != Some(354)
            {
                break;
            }
            let body = format!("Subject: crash-{n}\r\n\r\nmessage {n}\r\n.\r\n");
            if w.write_all(body.as_bytes()).is_err() {
                break;
            }
            match reply(&mut reader) {
                Some(250) => {
                    acked.lock().unwrap().insert(n);
                }
                Some(_) => {}
                None => break,
            }
        }
    }
}

#[test]
fn kill_9_at_random_moments_under_load_loses_no_acknowledged_message() {
    let rounds: usize = std::env::var("SPATE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let sink = Sink::start(&free_addr(), &[]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    // Small segments, reclaimed every 50 ms: segments are created, moved
    // out of and deleted all through the crashes.
    std::fs::write(
        &cfg,
        "[delivery]\nretry_initial_secs = 1\nretry_max_secs = 1\n\
         [spool]\nsegment_bytes = 393216\nreclaim_interval_ms = 50\n",
    )
    .unwrap();
    let mut spate = Spate::start(&[
        "--smarthost",
        &sink.addr,
        "--config",
        cfg.to_str().unwrap(),
        "--max-message-size",
        "10000",
    ]);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let injectors: Vec<_> = (0..3u64)
        .map(|i| {
            let (addr, stop, acked) = (spate.addr.clone(), stop.clone(), acked.clone());
            std::thread::spawn(move || inject(addr, i * 1_000_000_000, stop, acked))
        })
        .collect();
    for _ in 0..rounds {
        std::thread::sleep(Duration::from_millis(fastrand::u64(100..400)));
        spate.kill9();
        spate.launch();
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    for i in injectors {
        i.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "the load ran: {} messages acknowledged",
        acked.len()
    );
    eprintln!(
        "{} messages acknowledged across {rounds} crashes",
        acked.len()
    );
    // Duplicates are allowed (messages in flight at a crash); losses are not.
    let delivered = |sink: &Sink| -> BTreeSet<u64> {
        sink.messages()
            .iter()
            .filter_map(|m| {
                m.split("Subject: crash-")
                    .nth(1)?
                    .lines()
                    .next()?
                    .trim()
                    .parse()
                    .ok()
            })
            .collect()
    };
    let start = std::time::Instant::now();
    loop {
        let missing: Vec<u64> = acked.difference(&delivered(&sink)).copied().collect();
        if missing.is_empty() {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let files = std::fs::read_dir(sink.dump.path()).unwrap().count();
            let raw: String = std::fs::read_dir(sink.dump.path())
                .unwrap()
                .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
                .collect();
            let in_raw = missing
                .iter()
                .filter(|n| raw.contains(&format!("Subject: crash-{n}\n")))
                .count();
            panic!(
                "after 120 s, {} of {} acknowledged messages are not at the sink, e.g. {:?}; \
                 {} dump files, {} whole, {in_raw} of the missing in any dump file; spate log:\n{}",
                missing.len(),
                acked.len(),
                &missing[..missing.len().min(10)],
                files,
                sink.count(),
                spate.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Every launch made at least one segment per core; once all is
    // delivered the reclaimer leaves only the active ones (and any it is
    // still working through).
    let segments = || {
        std::fs::read_dir(spate.spool_dir())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("seg-")
            })
            .count()
    };
    wait_until(Duration::from_secs(30), "old segments reclaimed", || {
        segments() <= 4
    });
    assert_eq!(spate.stop(), 0);
    let (clean, report) = spate_cmd(&["spool", "verify", spate.spool_dir().to_str().unwrap()]);
    assert!(clean, "{report}");
}
