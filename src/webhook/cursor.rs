//! The durable cursor of one webhook on one core: how far into the core's
//! delivery log the receiver has acknowledged, in
//! `<spool dir>/webhooks/<name>/core<N>.cursor`.
//!
//! The file is one line, `v1 <log inode> <offset> <crc32c>`, written to a
//! new file, fdatasync'd, renamed over the old one, and the directory
//! synced: a crash leaves the old cursor or the new one. A file that does
//! not read back whole (torn, checksum wrong), or that names another log
//! file (another inode, or an offset past its end: a log replaced or cut),
//! gives offset 0: events are sent again, never skipped.
//!
//! Must never be written before the batch it moves past was acknowledged.

use glommio::io::{BufferedFile, Directory, OpenOptions};
use std::path::{Path, PathBuf};

/// What a cursor file holds: a line far shorter than this.
const FILE_BYTES_MAX: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub inode: u64,
    pub offset: u64,
}

impl Cursor {
    pub fn encode(&self) -> Vec<u8> {
        let body = format!("v1 {} {}", self.inode, self.offset);
        format!("{body} {}\n", crc32c::crc32c(body.as_bytes())).into_bytes()
    }

    /// `None` unless the bytes are exactly one whole, checked line.
    pub fn decode(bytes: &[u8]) -> Option<Cursor> {
        let text = std::str::from_utf8(bytes).ok()?.strip_suffix('\n')?;
        let (body, crc) = text.rsplit_once(' ')?;
        if crc.parse::<u32>().ok()? != crc32c::crc32c(body.as_bytes()) {
            return None;
        }
        let mut f = body.split(' ');
        if f.next()? != "v1" {
            return None;
        }
        let inode = f.next()?.parse().ok()?;
        let offset = f.next()?.parse().ok()?;
        f.next().is_none().then_some(Cursor { inode, offset })
    }

    /// Where to start in a log with this inode and size: here, or at 0
    /// when the cursor belongs to another log file.
    pub fn start_in(saved: Option<Cursor>, inode: u64, size: u64) -> u64 {
        match saved {
            Some(c) if c.inode == inode && c.offset <= size => c.offset,
            _ => 0,
        }
    }
}

/// One cursor file and its directory.
pub struct CursorFile {
    path: PathBuf,
    new_path: PathBuf,
    dir: Directory,
}

impl CursorFile {
    /// `dir` exists (made at start, before the cores run).
    pub async fn open(dir: &Path, core: usize) -> std::io::Result<CursorFile> {
        Ok(CursorFile {
            path: dir.join(format!("core{core}.cursor")),
            new_path: dir.join(format!("core{core}.cursor.new")),
            dir: Directory::open(dir).await?,
        })
    }

    /// The saved cursor; `Ok(None)` when there is none or it is torn.
    pub async fn load(&self) -> std::io::Result<Option<Cursor>> {
        let file = match OpenOptions::new()
            .read(true)
            .buffered_open(&self.path)
            .await
        {
            Ok(f) => f,
            Err(e) => {
                let e = std::io::Error::from(e);
                return match e.kind() {
                    std::io::ErrorKind::NotFound => Ok(None),
                    _ => Err(e),
                };
            }
        };
        let bytes = file.read_at(0, FILE_BYTES_MAX).await?;
        let cursor = Cursor::decode(&bytes);
        if cursor.is_none() {
            eprintln!(
                "spate: webhook cursor {} is torn; starting from the log's beginning",
                self.path.display()
            );
        }
        let _ = file.close().await;
        Ok(cursor)
    }

    /// Makes `cursor` durable, replacing the last one whole.
    pub async fn save(&self, cursor: Cursor) -> std::io::Result<()> {
        let file: BufferedFile = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .buffered_open(&self.new_path)
            .await?;
        let bytes = cursor.encode();
        let len = bytes.len();
        let written = file.write_at(bytes, 0).await?;
        if written != len {
            return Err(std::io::Error::other("short write of a cursor"));
        }
        file.fdatasync().await?;
        file.close().await?;
        glommio::io::rename(&self.new_path, &self.path).await?;
        self.dir.sync().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_torn_files() {
        let c = Cursor {
            inode: 77,
            offset: 123_456,
        };
        let bytes = c.encode();
        assert_eq!(Cursor::decode(&bytes), Some(c));
        for cut in 0..bytes.len() {
            assert_eq!(Cursor::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[5] ^= 1;
        assert_eq!(Cursor::decode(&flipped), None);
        assert_eq!(Cursor::decode(&[0u8; 40]), None);
    }

    #[test]
    fn another_log_file_starts_at_zero() {
        let c = Some(Cursor {
            inode: 5,
            offset: 100,
        });
        assert_eq!(Cursor::start_in(c, 5, 100), 100);
        assert_eq!(Cursor::start_in(c, 5, 99), 0);
        assert_eq!(Cursor::start_in(c, 6, 1000), 0);
        assert_eq!(Cursor::start_in(None, 5, 1000), 0);
    }

    #[test]
    fn saved_on_disk_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let got = glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let f = CursorFile::open(&path, 2).await.unwrap();
                assert_eq!(f.load().await.unwrap(), None);
                for offset in [10, 20] {
                    f.save(Cursor { inode: 1, offset }).await.unwrap();
                }
                let got = f.load().await.unwrap();
                std::fs::write(path.join("core2.cursor"), b"v1 1 2").unwrap();
                (got, f.load().await.unwrap())
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(
            got.0,
            Some(Cursor {
                inode: 1,
                offset: 20
            })
        );
        assert_eq!(got.1, None);
        assert!(!dir.path().join("core2.cursor.new").exists());
    }
}
