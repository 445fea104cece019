//! The suppression journal's writer: this core's append-only file,
//! `<spool dir>/suppression/core<N>.<G>.jsonl` (G: the generation
//! [`super::load`] chose at start), one [`Change`] a line, each made
//! durable (group-committed: one fdatasync for the changes that arrive
//! together) before the change is put in force anywhere. Every write ends
//! in `\n`, so only the last line can be torn.

use super::lists::Change;
use crate::local::Notify;
use futures_channel::oneshot;
use glommio::io::BufferedFile;
use std::cell::{Cell, RefCell};
use std::path::Path;
use std::rc::Rc;

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
    pub async fn open(
        spool_dir: &Path,
        core: usize,
        generation: u64,
    ) -> std::io::Result<Rc<Journal>> {
        // The directory is made (and synced) on the main thread at start.
        let dir = super::load::dir(spool_dir);
        let path = dir.join(super::load::core_file(core, generation));
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
