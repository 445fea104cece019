//! The spool's lifecycle: segments deleted once nothing in them matters,
//! long-lived messages moved forward, and recovery afterwards finding
//! exactly what was still to deliver. Two spools on one executor play two
//! cores: messages are homed on core A, and core B writes the outcomes of
//! the recipients it owns to its own segments, as in the engine.

use super::recovery::recover;
use super::tests::run;
use super::*;
use spool_format::{encode_state, MessageBuilder, StateRecord};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

const SEGMENT: u64 = 64 * 1024;

/// Cores A (index 0) and B (index 1) of two, sharing one spool directory.
async fn two_cores(dir: &Path, segment_bytes: u64) -> (Rc<Spool>, Rc<Spool>) {
    let open = |core| {
        Spool::open(
            dir.to_path_buf(),
            Settings::manual(segment_bytes),
            core,
            IdSpace::new(1, core, 2),
            Vec::new(),
            Faults::default(),
        )
    };
    (open(0).await.unwrap(), open(1).await.unwrap())
}

/// Spools a message with recipients `r0@a.example` (core A's) and
/// `r1@b.example` (core B's) on `spool`, and returns its place.
async fn accept(spool: &Spool, body_len: usize, received_ms: u64) -> Arc<Stored> {
    let id = spool.next_message_id();
    let mut b = MessageBuilder::new(
        Vec::new(),
        received_ms,
        0,
        b"s@x.example",
        &[b"r0@a.example", b"r1@b.example"],
    );
    let line = format!("Message-Id: <{id:x}@x.example>\r\n");
    b.body_mut().extend_from_slice(line.as_bytes());
    while b.body_len() + 40 <= body_len {
        b.body_mut()
            .extend_from_slice(b"0123456789012345678901234567890123456\r\n");
    }
    let (start, len) = (b.body_start(), b.body_len());
    let record = b.finish(id);
    let stored = Stored::new(id, record.len(), start, len, 2);
    spool
        .append_message(record, stored.clone())
        .await
        .expect("appended");
    stored
}

/// Writes `state` for recipient `index` of `m` on `spool` (the core that
/// owns that recipient), as delivery does.
fn settle(spool: &Spool, m: &Arc<Stored>, state: StateRecord<'_>) {
    let mut records = Vec::new();
    encode_state(&mut records, m.id, &state);
    spool.append_lazy(records, vec![m.clone()]);
    if state.is_final() {
        m.finish(1);
    }
}

fn delivered(m: &Arc<Stored>, index: u32, spool: &Spool) {
    settle(
        spool,
        m,
        StateRecord::Delivered {
            recipient: index,
            time_ms: 1,
        },
    );
}

fn segment_files(dir: &Path) -> Vec<u64> {
    recovery::list_segments(dir)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

/// What recovery says is still to deliver: message id to recipient indexes.
fn pending(dir: &Path) -> BTreeMap<u64, Vec<u32>> {
    let r = recover(dir).unwrap();
    assert_eq!(r.report.corrupt.len(), 0);
    r.messages
        .iter()
        .map(|m| (m.id, m.recipients.iter().map(|r| r.index).collect()))
        .collect()
}

#[test]
fn a_finished_segment_is_deleted_and_busy_ones_are_kept() {
    run(|dir| async move {
        let (a, b) = two_cores(&dir, SEGMENT).await;
        // About three 18 KiB messages fill a 64 KiB segment.
        let mut ms = Vec::new();
        for _ in 0..10 {
            ms.push(accept(&a, 18_000, 1).await);
        }
        let first = ms[0].home_id().unwrap();
        let in_first: Vec<_> = ms
            .iter()
            .filter(|m| m.home_id() == Some(first))
            .cloned()
            .collect();
        assert!(
            in_first.len() >= 2,
            "{} in the first segment",
            in_first.len()
        );
        for m in &in_first {
            delivered(m, 0, &a);
            delivered(m, 1, &b);
        }
        assert_eq!(a.reclaim_now().await.deleted, 1);
        assert!(!segment_files(&dir).contains(&first));
        assert_eq!(a.stats.segments_deleted.get(), 1);
        // The others are busy: nothing more goes, nothing is moved.
        let again = a.reclaim_now().await;
        assert_eq!((again.deleted, again.moved_messages), (0, 0));
        b.reclaim_now().await;
        a.close(Duration::from_secs(5)).await;
        b.close(Duration::from_secs(5)).await;
        let left = pending(&dir);
        let expected: BTreeMap<u64, Vec<u32>> = ms[in_first.len()..]
            .iter()
            .map(|m| (m.id, vec![0, 1]))
            .collect();
        assert_eq!(left, expected);
    });
}

#[test]
fn a_long_lived_message_moves_forward_with_its_finished_recipient() {
    run(|dir| async move {
        let (a, b) = two_cores(&dir, SEGMENT).await;
        let long = accept(&a, 2_000, 1).await;
        let body_before = long.body().unwrap().to_vec();
        // r1 delivered by core B; r0 will wait for hours.
        delivered(&long, 1, &b);
        // Fill A's first segment and more with messages that finish.
        let home = long.home_id().unwrap();
        let mut others = Vec::new();
        while others.last().map(|m: &Arc<Stored>| m.home_id()) != Some(Some(home + 4)) {
            let m = accept(&a, 18_000, 1).await;
            delivered(&m, 0, &a);
            delivered(&m, 1, &b);
            others.push(m);
        }
        // And fill B's first segment (its state records) and roll it.
        for _ in 0..4 {
            let m = accept(&b, 18_000, 1).await;
            delivered(&m, 0, &a);
            delivered(&m, 1, &b);
        }
        let ra = a.reclaim_now().await;
        assert_eq!(ra.moved_messages, 1, "{ra:?}");
        assert_ne!(long.home_id(), Some(home), "moved forward");
        assert!(!segment_files(&dir).contains(&home));
        assert_eq!(long.body().unwrap().to_vec(), body_before);
        let rb = b.reclaim_now().await;
        assert!(rb.deleted >= 1, "{rb:?}");
        assert!(rb.copied_states >= 1, "B kept the outcome of r1: {rb:?}");
        a.close(Duration::from_secs(5)).await;
        b.close(Duration::from_secs(5)).await;
        let left = pending(&dir);
        assert_eq!(left, BTreeMap::from([(long.id, vec![0])]));
    });
}

/// A sustained load on simulated time: every simulated minute 40 messages
/// arrive; 95% are delivered within the minute, 5% are deferred, retried
/// every 30 minutes and delivered 4 hours after arrival. Over 10 simulated
/// hours the spool writes far more than it keeps: disk use must level off
/// once the deferred ones start to finish, and recovery at the end must
/// find exactly the recipients still undelivered.
#[test]
fn disk_use_levels_off_under_load_with_five_percent_deferred_for_hours() {
    run(|dir| async move {
        const PER_MINUTE: usize = 40;
        const HOURS: u64 = 10;
        const DEFER_MS: u64 = 4 * 3600 * 1000;
        const RETRY_MS: u64 = 30 * 60 * 1000;
        let (a, b) = two_cores(&dir, 256 * 1024).await;
        // id -> (place, received, next retry)
        let mut deferred: HashMap<u64, (Arc<Stored>, u64, u64)> = HashMap::new();
        let mut disk_by_hour = Vec::new();
        let mut written = 0u64;
        let mut n = 0u64;
        for minute in 0..HOURS * 60 {
            let now = minute * 60_000;
            for _ in 0..PER_MINUTE {
                n += 1;
                // Alternate the accepting core, as SO_REUSEPORT spreads clients.
                let home = if n.is_multiple_of(2) { &a } else { &b };
                let m = accept(home, 1_500, now).await;
                written += 1_600;
                if n.is_multiple_of(20) {
                    delivered(&m, 1, &b);
                    deferred.insert(m.id, (m, now, now + RETRY_MS));
                } else {
                    delivered(&m, 0, &a);
                    delivered(&m, 1, &b);
                }
            }
            let mut done = Vec::new();
            for (id, (m, received, next)) in deferred.iter_mut() {
                if now >= *received + DEFER_MS {
                    delivered(m, 0, &a);
                    done.push(*id);
                } else if now >= *next {
                    *next = now + RETRY_MS;
                    let attempt = ((now - *received) / RETRY_MS) as u32;
                    settle(
                        &a,
                        m,
                        StateRecord::Attempt {
                            recipient: 0,
                            time_ms: now,
                            attempt,
                            next_ms: *next,
                            reason: "451 4.7.1 try again later",
                        },
                    );
                }
            }
            for id in done {
                deferred.remove(&id);
            }
            a.reclaim_now().await;
            b.reclaim_now().await;
            if (minute + 1) % 60 == 0 {
                disk_by_hour.push(segment_files(&dir).len() as u64 * 256 * 1024);
            }
        }
        let total_written = written;
        eprintln!(
            "disk use by simulated hour (KiB): {:?}; {} KiB of records written",
            disk_by_hour.iter().map(|b| b / 1024).collect::<Vec<_>>(),
            total_written / 1024
        );
        // From hour 5 on the deferred ones finish as fast as they arrive:
        // disk use stays within the peak seen by then, plus two segments.
        let settled = disk_by_hour[4];
        let peak_after = *disk_by_hour[5..].iter().max().unwrap();
        assert!(
            peak_after <= settled + 2 * 256 * 1024,
            "disk use kept growing: {disk_by_hour:?}"
        );
        assert!(
            peak_after * 5 < total_written,
            "the spool keeps less than a fifth of what it wrote: {disk_by_hour:?}"
        );
        a.close(Duration::from_secs(5)).await;
        b.close(Duration::from_secs(5)).await;
        let expected: BTreeMap<u64, Vec<u32>> = deferred.keys().map(|&id| (id, vec![0])).collect();
        assert_eq!(pending(&dir), expected);
    });
}

/// A reclaimed segment's file is written over as a later segment (format
/// version 2): what it held before never reads as records, recovery finds
/// exactly the messages still owed and reports no damage, and the spares
/// left at the end are removed.
#[test]
fn a_reclaimed_file_becomes_a_later_segment() {
    run(|dir| async move {
        let (a, b) = two_cores(&dir, SEGMENT).await;
        let mut owed = BTreeMap::new();
        for _ in 0..8 {
            let mut ms = Vec::new();
            for _ in 0..6 {
                ms.push(accept(&a, 18_000, 1).await);
            }
            for m in &ms {
                delivered(m, 0, &a);
                delivered(m, 1, &b);
            }
            // One small message a round stays owed; compaction moves it on.
            let kept = accept(&a, 1_000, 1).await;
            delivered(&kept, 1, &b);
            owed.insert(kept.id, vec![0]);
            a.reclaim_now().await;
            b.reclaim_now().await;
        }
        let recycled = a.stats.segments_recycled.get();
        assert!(recycled >= 4, "{recycled} segments recycled");
        assert!(a.stats.records_moved.get() > 0);
        a.close(Duration::from_secs(5)).await;
        b.close(Duration::from_secs(5)).await;
        let r = recover(&dir).unwrap();
        assert_eq!(r.report.torn_tails, []);
        assert_eq!(r.report.corrupt, []);
        let found: BTreeMap<u64, Vec<u32>> = r
            .messages
            .iter()
            .map(|m| (m.id, m.recipients.iter().map(|r| r.index).collect()))
            .collect();
        assert_eq!(found, owed);
        // The next run takes over the spares: its first segment is one.
        assert!(!r.spares.is_empty());
        let books = r.books.into_iter().map(|(_, b)| b).collect();
        let ids = IdSpace::new(r.next_segment_id, 0, 1);
        let settings = Settings::manual(SEGMENT);
        let faults = Faults::default();
        let a = Spool::open(dir.clone(), settings, 0, ids, books, faults)
            .await
            .unwrap();
        a.adopt_spares(r.spares);
        a.prepare().await;
        assert_eq!(a.stats.segments_recycled.get(), 1);
        let late = accept(&a, 1_000, 1).await;
        owed.insert(late.id, vec![0, 1]);
        a.close(Duration::from_secs(5)).await;
        assert_eq!(pending(&dir), owed);
    });
}

/// A move forward cut short by a crash leaves the same record in two
/// segments: recovery keeps one, and a state record applies to it.
#[test]
fn a_record_found_twice_is_recovered_once() {
    run(|dir| async move {
        let (a, b) = two_cores(&dir, SEGMENT).await;
        let m = accept(&a, 2_000, 1).await;
        delivered(&m, 1, &b);
        // The copy a compaction would write, without the delete after it.
        let mut copy = m.record().unwrap().to_vec();
        spool_format::unstamp(&mut copy);
        a.append(copy).await.unwrap();
        a.close(Duration::from_secs(5)).await;
        b.close(Duration::from_secs(5)).await;
        let r = recover(&dir).unwrap();
        assert_eq!(r.report.duplicates, 1);
        assert_eq!(r.messages.len(), 1);
        let indexes: Vec<u32> = r.messages[0].recipients.iter().map(|r| r.index).collect();
        assert_eq!(indexes, [0], "r1's outcome applies to the one copy kept");
    });
}

/// Random work on two cores (messages accepted, recipients delivered or
/// retried, reclaim passes), stopped and recovered four times over, each
/// time going on from the recovered books. After every restart recovery
/// must find exactly the recipients a model of the work says are owed.
#[test]
fn random_work_across_restarts_owes_exactly_the_unfinished_recipients() {
    for seed in 0..6u64 {
        run(move |dir| async move {
            let mut rng = fastrand::Rng::with_seed(seed);
            // Unfinished recipient indexes by message id; its place.
            let mut model: BTreeMap<u64, (Arc<Stored>, Vec<u32>)> = BTreeMap::new();
            let mut opened: Option<super::recovery::Recovered> = None;
            // Segments deleted, messages moved, state records copied.
            let mut done = (0, 0, 0);
            for epoch in 0..4 {
                let (a, b) = reopen(&dir, opened.take(), &mut model).await;
                let core = |i: u32| if i == 0 { &a } else { &b };
                for _ in 0..400 {
                    match rng.u8(0..10) {
                        0..=2 => {
                            let home = if rng.bool() { &a } else { &b };
                            let m = accept(home, rng.usize(300..12_000), 1).await;
                            model.insert(m.id, (m, vec![0, 1]));
                        }
                        3..=7 if !model.is_empty() => {
                            let id = *model.keys().nth(rng.usize(0..model.len())).unwrap();
                            let (m, owed) = model.get_mut(&id).unwrap();
                            let index = owed.remove(rng.usize(0..owed.len()));
                            delivered(m, index, core(index));
                            if owed.is_empty() {
                                model.remove(&id);
                            }
                        }
                        8 if !model.is_empty() => {
                            let (m, owed) = model.values().nth(rng.usize(0..model.len())).unwrap();
                            let index = owed[0];
                            let state = StateRecord::Attempt {
                                recipient: index,
                                time_ms: 2,
                                attempt: epoch + 1,
                                next_ms: 3,
                                reason: "451 later",
                            };
                            settle(core(index), m, state);
                        }
                        _ => {
                            for core in [&a, &b] {
                                let r = core.reclaim_now().await;
                                done.0 += r.deleted;
                                done.1 += r.moved_messages;
                                done.2 += r.copied_states;
                            }
                        }
                    }
                }
                a.close(Duration::from_secs(5)).await;
                b.close(Duration::from_secs(5)).await;
                let expected: BTreeMap<u64, Vec<u32>> = model
                    .iter()
                    .map(|(&id, (_, owed))| (id, owed.clone()))
                    .collect();
                let recovered = recover(&dir).unwrap();
                assert_eq!(recovered.report.corrupt.len(), 0);
                let got: BTreeMap<u64, Vec<u32>> = recovered
                    .messages
                    .iter()
                    .map(|m| (m.id, m.recipients.iter().map(|r| r.index).collect()))
                    .collect();
                assert_eq!(got, expected, "seed {seed}, after epoch {epoch}");
                opened = Some(recovered);
            }
            eprintln!("seed {seed}: (deleted, moved, copied) = {done:?}");
            assert!(
                done.0 > 10 && done.1 > 0 && done.2 > 0,
                "seed {seed} exercised reclaiming: {done:?}"
            );
        });
    }
}

/// Opens cores A and B on the spool, with the books and places recovery
/// found (none the first time); the model's places become the recovered
/// ones, as a restarted engine's queues would hold.
async fn reopen(
    dir: &Path,
    recovered: Option<super::recovery::Recovered>,
    model: &mut BTreeMap<u64, (Arc<Stored>, Vec<u32>)>,
) -> (Rc<Spool>, Rc<Spool>) {
    let Some(r) = recovered else {
        return two_cores(dir, SEGMENT).await;
    };
    for m in &r.messages {
        if let Some(entry) = model.get_mut(&m.id) {
            entry.0 = m.stored.clone();
        }
    }
    let mut books: [Vec<SegmentBook>; 2] = [Vec::new(), Vec::new()];
    for (core, book) in r.books {
        books[core as usize % 2].push(book);
    }
    let [books_a, books_b] = books;
    let open = |core, books| {
        Spool::open(
            dir.to_path_buf(),
            Settings::manual(SEGMENT),
            core,
            IdSpace::new(r.next_segment_id, core, 2),
            books,
            Faults::default(),
        )
    };
    (
        open(0, books_a).await.unwrap(),
        open(1, books_b).await.unwrap(),
    )
}
