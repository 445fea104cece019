//! The suppression journals at start, on the main thread before the cores
//! run: read, applied in time order, and compacted when mostly history.
//!
//! Files live in generations, so that compaction is one atomic rename:
//! - `base.<G>.jsonl`: every entry in force when generation G began
//!   (none for generation 0);
//! - `core<N>.<G>.jsonl`: the changes core N made during generation G
//!   (of this run's cores, or of an earlier run's with more).
//!
//! The current generation is the highest G with a base (0 if none). Its
//! base and core files are read; files of other generations, and a
//! `.tmp` left by a crash, are deleted. When the lines read are more than
//! twice the entries (plus [`COMPACT_SLACK_LINES`]), the entries are
//! written to `base.<G+1>.jsonl` (a temporary file, fsync'd, renamed,
//! directory fsync'd) and generation G+1 begins; a crash before the
//! rename leaves generation G whole, after it generation G+1.
//!
//! A torn last line (a crash in the middle of a write) is skipped with a
//! warning. Changes are applied in time order; the owning core stamps
//! them with a clock it never lets go back, so one address's changes keep
//! their order.

use super::lists::{Applied, Change, Lists, Op};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Lines longer than this are not changes spate wrote: skipped.
const LINE_BYTES_MAX: usize = 4096;
/// History lines tolerated beyond twice the entries before a compaction.
pub const COMPACT_SLACK_LINES: usize = 1024;

pub fn dir(spool_dir: &Path) -> PathBuf {
    spool_dir.join("suppression")
}

pub fn core_file(core: usize, generation: u64) -> String {
    format!("core{core}.{generation}.jsonl")
}

fn base_file(generation: u64) -> String {
    format!("base.{generation}.jsonl")
}

/// What a journal file's name says of it.
enum Named {
    Base(u64),
    Core(u64),
    Other,
}

fn named(name: &str) -> Named {
    let Some(stem) = name.strip_suffix(".jsonl") else {
        return Named::Other;
    };
    let Some((kind, generation)) = stem.rsplit_once('.') else {
        return Named::Other;
    };
    let Ok(g) = generation.parse::<u64>() else {
        return Named::Other;
    };
    match kind {
        "base" => Named::Base(g),
        k if k
            .strip_prefix("core")
            .is_some_and(|n| n.parse::<usize>().is_ok()) =>
        {
            Named::Core(g)
        }
        _ => Named::Other,
    }
}

/// The lists as journaled, and the generation the cores write into.
pub fn load(spool_dir: &Path, max: usize) -> Result<(Lists, u64), String> {
    let dir = dir(spool_dir);
    let io = |e: std::io::Error| format!("{}: {e}", dir.display());
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Lists::new(max), 0)),
        Err(e) => return Err(io(e)),
    };
    let names: Vec<String> = entries
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    let generation = names
        .iter()
        .filter_map(|n| match named(n) {
            Named::Base(g) => Some(g),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let mut changes = Vec::new();
    for name in &names {
        let path = dir.join(name);
        match named(name) {
            Named::Base(g) | Named::Core(g) if g == generation => read_file(&path, &mut changes)?,
            Named::Base(_) | Named::Core(_) => std::fs::remove_file(path).map_err(io)?,
            Named::Other if name.ends_with(".tmp") => std::fs::remove_file(path).map_err(io)?,
            // Not a journal: left alone.
            Named::Other => {}
        }
    }
    let lines = changes.len();
    let lists = apply(changes, max);
    if lines <= 2 * lists.len() + COMPACT_SLACK_LINES {
        return Ok((lists, generation));
    }
    let next = generation + 1;
    compact(&dir, &lists, next).map_err(io)?;
    eprintln!(
        "spate: suppression journals compacted: {lines} lines to {} entries",
        lists.len()
    );
    Ok((lists, next))
}

fn apply(mut changes: Vec<Change>, max: usize) -> Lists {
    // Stable: one file's changes to one address keep their order.
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
    lists
}

/// Writes `lists` as the base of generation `next`, then deletes the
/// files of the generations before it.
fn compact(dir: &Path, lists: &Lists, next: u64) -> std::io::Result<()> {
    let tmp = dir.join(format!("{}.tmp", base_file(next)));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    for e in lists.list(None, None, usize::MAX) {
        let change = Change {
            op: Op::Add,
            tenant: e.tenant,
            address: e.address,
            reason: e.entry.reason.into(),
            by: e.entry.by.into(),
            time_ms: e.entry.time_ms,
        };
        serde_json::to_writer(&mut out, &change)?;
        out.write_all(b"\n")?;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, dir.join(base_file(next)))?;
    std::fs::File::open(dir)?.sync_all()?;
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if matches!(named(&name), Named::Base(g) | Named::Core(g) if g < next) {
            std::fs::remove_file(dir.join(&name))?;
        }
    }
    std::fs::File::open(dir)?.sync_all()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn line(op: Op, a: &str, t: u64) -> String {
        let c = Change::new(op, "", a, "r", "t", t).unwrap();
        serde_json::to_string(&c).unwrap() + "\n"
    }

    fn journal_dir() -> (tempfile::TempDir, PathBuf) {
        let spool = tempfile::tempdir().unwrap();
        let d = dir(spool.path());
        std::fs::create_dir_all(&d).unwrap();
        (spool, d)
    }

    #[test]
    fn no_journal_is_empty_lists() {
        let spool = tempfile::tempdir().unwrap();
        let (lists, generation) = load(spool.path(), 10).unwrap();
        assert!(lists.is_empty());
        assert_eq!(generation, 0);
    }

    #[test]
    fn every_cores_changes_apply_in_time_order_and_torn_lines_are_skipped() {
        let (spool, d) = journal_dir();
        let core0 = line(Op::Add, "a@x.org", 1)
            + &line(Op::Remove, "b@x.org", 5)
            + "{\"op\":\"add\",\"addr";
        let core1 = line(Op::Add, "b@x.org", 2) + &line(Op::Add, "c@x.org", 3);
        std::fs::write(d.join(core_file(0, 0)), core0).unwrap();
        std::fs::write(d.join(core_file(1, 0)), core1).unwrap();
        let (lists, generation) = load(spool.path(), 100).unwrap();
        assert!(lists.check("", "a@x.org").is_some());
        assert!(
            lists.check("", "b@x.org").is_none(),
            "removed after it was added"
        );
        assert!(lists.check("", "c@x.org").is_some());
        assert_eq!((lists.len(), generation), (2, 0));
    }

    #[test]
    fn history_is_compacted_into_a_new_generation_that_loads_the_same() {
        let (spool, d) = journal_dir();
        let mut text = String::new();
        for t in 0..(COMPACT_SLACK_LINES as u64 + 10) {
            text += &line(Op::Add, "flip@x.org", 2 * t);
            text += &line(Op::Remove, "flip@x.org", 2 * t + 1);
        }
        text += &line(Op::Add, "kept@x.org", 1_000_000);
        std::fs::write(d.join(core_file(0, 0)), &text).unwrap();
        std::fs::write(d.join(core_file(3, 0)), line(Op::Add, "other@x.org", 7)).unwrap();
        std::fs::write(d.join("notes.txt"), "not a journal").unwrap();
        let (lists, generation) = load(spool.path(), 100).unwrap();
        assert_eq!((lists.len(), generation), (2, 1));
        let mut files: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(files, ["base.1.jsonl", "notes.txt"]);
        // New changes go to generation 1's core files, read with its base.
        std::fs::write(
            d.join(core_file(0, 1)),
            line(Op::Remove, "kept@x.org", 2_000_000),
        )
        .unwrap();
        let (lists, generation) = load(spool.path(), 100).unwrap();
        assert_eq!(generation, 1);
        assert!(lists.check("", "kept@x.org").is_none());
        assert!(lists.check("", "other@x.org").is_some());
    }

    #[test]
    fn a_crash_in_the_middle_of_a_compaction_leaves_one_whole_generation() {
        let (spool, d) = journal_dir();
        std::fs::write(d.join(core_file(0, 0)), line(Op::Add, "a@x.org", 1)).unwrap();
        // Before the rename: only a temporary base of generation 1.
        std::fs::write(d.join("base.1.jsonl.tmp"), line(Op::Add, "ghost@x.org", 1)).unwrap();
        let (lists, generation) = load(spool.path(), 100).unwrap();
        assert_eq!(generation, 0);
        assert!(lists.check("", "a@x.org").is_some());
        assert!(lists.check("", "ghost@x.org").is_none());
        assert!(!d.join("base.1.jsonl.tmp").exists());
        // After the rename, before the old files went: generation 1 alone.
        std::fs::write(d.join("base.1.jsonl"), line(Op::Add, "b@x.org", 2)).unwrap();
        std::fs::write(d.join(core_file(1, 0)), line(Op::Add, "stale@x.org", 3)).unwrap();
        let (lists, generation) = load(spool.path(), 100).unwrap();
        assert_eq!(generation, 1);
        assert!(lists.check("", "b@x.org").is_some());
        assert!(lists.check("", "stale@x.org").is_none());
        assert!(!d.join(core_file(0, 0)).exists());
    }
}
