//! Group commit under a controllable disk: syncs held open, failed, and
//! batched. These are the spool's promises to the SMTP layer.

use super::*;
use glommio::sync::Semaphore;
use glommio::timer::sleep;
use glommio::LocalExecutorBuilder;
use spool_format::{decode_record_in, tag_for, Layout, MessageBuilder, MessageView};
use std::time::Duration;

fn record(id: u64, body: &[u8]) -> Vec<u8> {
    let mut b = MessageBuilder::new(Vec::new(), 1, 0, b"s@a.example", &[b"r@b.example"]);
    b.body_mut().extend_from_slice(body);
    b.finish(id)
}

/// Runs `f` on a fresh executor with a fresh spool directory.
pub(super) fn run<F: std::future::Future<Output = ()> + 'static>(
    f: impl FnOnce(PathBuf) -> F + Send + 'static,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    LocalExecutorBuilder::default()
        .spawn(move || f(path))
        .unwrap()
        .join()
        .unwrap();
}

async fn open(dir: PathBuf, faults: Faults) -> Rc<Spool> {
    Spool::open(
        dir,
        Settings::manual(1 << 20),
        0,
        IdSpace::new(1, 0, 1),
        Vec::new(),
        faults,
    )
    .await
    .unwrap()
}

/// A spool whose syncs each wait for a permit of the returned gate.
async fn gated(dir: PathBuf) -> (Rc<Spool>, Rc<Semaphore>) {
    let gate = Rc::new(Semaphore::new(0));
    let faults = Faults {
        sync_gate: Some(gate.clone()),
        ..Default::default()
    };
    (open(dir, faults).await, gate)
}

#[test]
fn no_acknowledgement_before_the_sync_returns() {
    run(|dir| async move {
        let (spool, gate) = gated(dir).await;
        let acked = Rc::new(Cell::new(false));
        let (s, a) = (spool.clone(), acked.clone());
        let id = spool.next_message_id();
        let task = glommio::spawn_local(async move {
            let placed = s.append(record(id, b"hello\r\n")).await;
            a.set(true);
            placed
        });
        sleep(Duration::from_millis(100)).await;
        assert!(
            !acked.get(),
            "append returned while its sync was still held"
        );
        assert_eq!(spool.stats.syncs.get(), 0);
        gate.signal(1);
        let placed = task.await.unwrap();
        assert_eq!(spool.stats.syncs.get(), 1);
        let layout = Layout::V2 {
            tag: tag_for(placed.segment.segment_id),
        };
        let at = placed.offset as usize;
        let (h, payload) = decode_record_in(&placed.segment.map[at..], layout).unwrap();
        assert_eq!(h.message_id, id);
        assert_eq!(MessageView::decode(payload).unwrap().body, b"hello\r\n");
    });
}

#[test]
fn appends_queued_during_a_sync_share_the_next_one() {
    run(|dir| async move {
        let (spool, gate) = gated(dir).await;
        let mut tasks = Vec::new();
        for i in 0..10u64 {
            let s = spool.clone();
            tasks.push(glommio::spawn_local(async move {
                s.append(record(i, b"x\r\n")).await
            }));
            glommio::yield_if_needed().await;
            sleep(Duration::from_millis(1)).await;
        }
        gate.signal(10);
        let mut offsets = Vec::new();
        for t in tasks {
            offsets.push(t.await.unwrap().offset);
        }
        assert!(
            spool.stats.syncs.get() <= 2,
            "{} syncs for 10 records",
            spool.stats.syncs.get()
        );
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "records are placed in order: {offsets:?}"
        );
    });
}

#[test]
fn a_failed_sync_is_never_acknowledged_and_retires_the_segment() {
    run(|dir| async move {
        let faults = Faults {
            fail_syncs: Cell::new(1),
            ..Default::default()
        };
        let spool = open(dir.clone(), faults).await;
        let first = spool.append(record(1, b"a\r\n")).await;
        assert!(matches!(first, Err(SpoolError::Io(_))), "{first:?}");
        let second = spool.append(record(2, b"b\r\n")).await.unwrap();
        assert_eq!(
            spool.stats.segments.get(),
            2,
            "the failed segment is not written again"
        );
        assert_eq!(second.offset, spool_format::RECORDS_OFFSET as u64);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
    });
}

#[test]
fn a_full_segment_rolls_to_a_new_one() {
    run(|dir| async move {
        let spool = open(dir, Faults::default()).await;
        let body = vec![b'x'; 300 * 1024];
        let mut segments = std::collections::HashSet::new();
        for i in 0..8 {
            let p = spool.append(record(i, &body)).await.unwrap();
            segments.insert(p.segment.segment_id);
        }
        assert!(segments.len() >= 3, "{segments:?}");
    });
}

#[test]
fn id_spaces_of_cores_never_overlap() {
    let mut a = IdSpace::new(10, 0, 3);
    let mut b = IdSpace::new(10, 2, 3);
    let xs: Vec<u64> = (0..5).map(|_| a.take()).collect();
    let ys: Vec<u64> = (0..5).map(|_| b.take()).collect();
    assert!(xs.iter().all(|x| !ys.contains(x)));
    assert_eq!(xs[0], 10);
}

#[test]
fn the_next_segment_is_prepared_once_the_active_one_is_half_full() {
    run(|dir| async move {
        let spool = open(dir.clone(), Faults::default()).await;
        let body = vec![b'x'; 300 * 1024];
        let first = spool.append(record(1, &body)).await.unwrap();
        let segments = || recovery::list_segments(&dir).unwrap();
        sleep(Duration::from_millis(200)).await;
        assert_eq!(segments().len(), 1, "no spare while under half full");
        spool.append(record(2, &body)).await.unwrap();
        let mut waited = 0;
        while segments().len() < 2 && waited < 100 {
            sleep(Duration::from_millis(20)).await;
            waited += 1;
        }
        let spare = segments()
            .into_iter()
            .map(|(id, _)| id)
            .find(|&id| id != first.segment.segment_id)
            .expect("a spare was made once the segment was half full");
        spool.append(record(3, &body)).await.unwrap();
        let rolled = spool.append(record(4, &body)).await.unwrap();
        assert_eq!(rolled.segment.segment_id, spare, "the roll took the spare");
    });
}

#[test]
fn prepare_makes_the_segment_the_first_append_goes_to() {
    run(|dir| async move {
        let spool = open(dir.clone(), Faults::default()).await;
        spool.prepare().await;
        let made: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(made.len(), 1, "one segment made before any append");
        let placed = spool.append(record(1, b"a\r\n")).await.unwrap();
        assert_eq!(
            made[0].as_ref().unwrap().file_name(),
            std::ffi::OsString::from(spool_format::segment_file_name(placed.segment.segment_id)),
        );
        assert_eq!(spool.stats.segments.get(), 1, "no second segment");
    });
}

#[test]
fn a_deleted_segment_is_freed_a_step_at_a_time_while_held_open() {
    use std::os::unix::fs::MetadataExt;
    run(|dir| async move {
        let path = dir.join("deleted");
        let len = 3 * (1 << 20) + 4096;
        std::fs::write(&path, vec![7u8; len]).unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let watch = file.try_clone().unwrap();
        std::fs::remove_file(&path).unwrap();
        let before = watch.metadata().unwrap().blocks();
        assert!(before * 512 >= len as u64, "{before} blocks written");
        let probe = dir.join("probe");
        std::fs::write(&probe, [1u8; 4096]).unwrap();
        let can_punch = segment::punch_hole(
            &std::fs::File::options().write(true).open(&probe).unwrap(),
            0,
            4096,
        );
        segment::free_paced(file, len as u64).await;
        let after = watch.metadata().unwrap();
        if can_punch {
            assert_eq!(after.blocks(), 0, "every block freed");
        } else {
            // This filesystem frees the blocks only at the last close.
            assert_eq!(after.blocks(), before, "nothing freed, nothing lost");
        }
        assert_eq!(after.len(), len as u64, "size kept");
    });
}
