//! The suppression journal: one append-only file per core,
//! `<spool dir>/suppression/core<N>.jsonl`, one [`Change`] a line, each
//! made durable (group-committed: one fdatasync for the changes that
//! arrive together) before the change is put in force anywhere.
//!
//! At start every core's file (of this run's cores or of an earlier run's
//! with more) is read on the main thread, before the cores run, and the
//! changes are applied in time order. A torn last line (a crash in the
//! middle of a write) is skipped with a warning; the line before it is
//! whole because every write ends in `\n`. Files are never compacted: a
//! removal stays as a line (the lists' size limit bounds memory, not the
//! files; see tuning/platform.md).

use super::lists::{Applied, Change, Lists};
use crate::local::Notify;
use futures_channel::oneshot;
use glommio::io::BufferedFile;
use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Lines longer than this are not changes spate wrote: skipped at load.
const LINE_BYTES_MAX: usize = 4096;

pub fn dir(spool_dir: &Path) -> PathBuf {
    spool_dir.join("suppression")
}

/// Reads every core's journal into one set of lists (main thread, at start).
pub fn load(spool_dir: &Path, max: usize) -> Result<Lists, String> {
    let dir = dir(spool_dir);
    let mut changes = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Lists::new(max)),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        if path.extension().is_some_and(|x| x == "jsonl") {
            read_file(&path, &mut changes)?;
        }
    }
    // Stable: one core's changes to one address keep their order.
    changes.sort_by_key(|c: &Change| c.time_ms);
    let mut lists = Lists::new(max);
    let mut full = 0u64;
    for c in &changes {
        if lists.apply(c) == Applied::Full {
            full += 1;
        }
    }
    if full > 0 {
        eprintln!("spate: suppression lists are full (suppression.entries_max = {max}): {full} journaled entries were not loaded");
    }
    Ok(lists)
}

fn read_file(path: &Path, into: &mut Vec<Change>) -> Result<(), String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    for (n, line) in text.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Change>(line) {
            Ok(c) if line.len() <= LINE_BYTES_MAX => into.push(c),
            _ => eprintln!(
                "spate: {}: line {} is not a suppression change (a torn write?); skipped",
                path.display(),
                n + 1
            ),
        }
    }
    Ok(())
}

type Waiter = oneshot::Sender<Result<(), String>>;

/// This core's journal file and its group-committing writer task.
pub struct Journal {
    file: BufferedFile,
    /// A failed write may have left part of a line: the next write starts
    /// a line of its own.
    torn: Cell<bool>,
    position: Cell<u64>,
    pending: RefCell<Vec<(Vec<u8>, Waiter)>>,
    kick: Notify,
}

impl Journal {
    pub async fn open(spool_dir: &Path, core: usize) -> std::io::Result<Rc<Journal>> {
        // The directory is made (and synced) on the main thread at start.
        let dir = dir(spool_dir);
        let path = dir.join(format!("core{core}.jsonl"));
        let (file, mut position, torn) = crate::delivery_log::open_lines(&path).await?;
        // A torn line from a crash: start on a line of our own.
        if torn {
            file.write_at(b"\n".to_vec(), position).await?;
            position += 1;
        }
        // A new file's name is durable only once its directory is synced.
        glommio::io::Directory::open(&dir).await?.sync().await?;
        let journal = Rc::new(Journal {
            file,
            torn: Cell::new(false),
            position: Cell::new(position),
            pending: RefCell::new(Vec::new()),
            kick: Notify::default(),
        });
        let writer = journal.clone();
        glommio::spawn_local(async move {
            loop {
                writer.kick.notified().await;
                writer.write_pending().await;
            }
        })
        .detach();
        Ok(journal)
    }

    /// Appends `change`; returns once it is durable.
    pub async fn append(&self, change: &Change) -> Result<(), String> {
        let mut line = serde_json::to_vec(change).expect("changes serialize");
        line.push(b'\n');
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().push((line, tx));
        self.kick.notify();
        rx.await
            .unwrap_or_else(|_| Err("the suppression journal is gone".into()))
    }

    async fn write_pending(&self) {
        let batch = std::mem::take(&mut *self.pending.borrow_mut());
        if batch.is_empty() {
            return;
        }
        let mut buf = Vec::new();
        if self.torn.replace(false) {
            buf.push(b'\n');
        }
        for (line, _) in &batch {
            buf.extend_from_slice(line);
        }
        let at = self.position.get();
        let len = buf.len() as u64;
        let result = match self.file.write_at(buf, at).await {
            Ok(n) if n as u64 == len => self.file.fdatasync().await.map_err(|e| e.to_string()),
            Ok(n) => Err(format!("short write ({n} of {len} bytes)")),
            Err(e) => Err(e.to_string()),
        };
        match &result {
            // A failed write may have left part of the batch: later lines
            // go after it, and the load skips what is torn.
            Ok(()) => self.position.set(at + len),
            Err(_) => {
                self.torn.set(true);
                self.position
                    .set(self.file.file_size().await.unwrap_or(at + len));
            }
        }
        for (_, waiter) in batch {
            let _ = waiter.send(
                result
                    .clone()
                    .map_err(|e| format!("suppression journal: {e}")),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::lists::Op;
    use super::*;

    #[test]
    fn load_applies_every_cores_changes_in_time_order_and_skips_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let j = super::dir(dir.path());
        std::fs::create_dir_all(&j).unwrap();
        let line = |op, a: &str, t| {
            let c = Change::new(op, "", a, "r", "t", t).unwrap();
            serde_json::to_string(&c).unwrap() + "\n"
        };
        let core0 = line(Op::Add, "a@x.org", 1)
            + &line(Op::Remove, "b@x.org", 5)
            + "{\"op\":\"add\",\"addr";
        let core1 = line(Op::Add, "b@x.org", 2) + &line(Op::Add, "c@x.org", 3);
        std::fs::write(j.join("core0.jsonl"), core0).unwrap();
        std::fs::write(j.join("core1.jsonl"), core1).unwrap();
        std::fs::write(j.join("notes.txt"), "not a journal").unwrap();
        let lists = load(dir.path(), 100).unwrap();
        assert!(lists.check("", "a@x.org").is_some());
        assert!(
            lists.check("", "b@x.org").is_none(),
            "removed after it was added"
        );
        assert!(lists.check("", "c@x.org").is_some());
        assert_eq!(lists.len(), 2);
    }

    #[test]
    fn no_journal_is_empty_lists() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path(), 10).unwrap().is_empty());
    }
}
