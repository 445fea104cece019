//! Warm-up: a new sending address earns its volume day by day. A source
//! with `warmup = "PLAN"` may send each provider at most the plan's
//! `daily[N]` messages on its N-th sending day with that provider (a day
//! on which it sent that provider at least one message); past the plan's
//! last day it is warm and unlimited. Domains in no provider rule count
//! together as one provider, "(other)".
//!
//! A day that ends with a throttling or suspending reply from the provider
//! to the source does not count: the source stays on that day ("held").
//!
//! Owns each (source, provider) pair's progress, shared by every core: one
//! atomic word per pair ([`Progress`]) holding the calendar date, the plan
//! day, the held flag and the messages sent that date, changed only by
//! compare-and-swap, so the daily volume is exact over all cores. The
//! table of pairs ([`Warmups`]) is behind a mutex that a core touches only
//! for a pair it has not seen before (each core keeps its own handles).
//!
//! The progress outlives reloads and restarts: it is written to
//! `<spool>/warmup.json` every few seconds by a thread of its own and when
//! the engine stops, never by a core. The calendar is UTC dates, or, with
//! `delivery.warmup_clock = "manual"`, a day counter that only SIGUSR2
//! advances (for tests, and for operators who end the sending day
//! themselves).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Most days in a plan, and most messages on one day of it.
pub const PLAN_DAYS_MAX: usize = 365;
pub const DAILY_MAX: u32 = 1_000_000_000;
/// Most (source, provider) pairs tracked; a pair past it is not limited
/// (and the start says so on stderr once).
pub const PAIRS_MAX: usize = 1024 * 256;
/// The provider name that domains in no provider rule count under.
pub const OTHER: &str = "(other)";

/// A `[warmup.NAME]` plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    /// Messages per provider on each sending day, the first day first.
    pub daily: Vec<u32>,
    pub overflow: Overflow,
}

/// What happens to mail over a warming source's volume for today.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overflow {
    /// It waits in the queue for a source with room (tomorrow, if none).
    Queue,
    /// It goes out from this pool.
    Pool(String),
}

impl Plan {
    /// Today's volume on plan day `day` (0 for the first); `None`: warm.
    fn volume(&self, day: u32) -> Option<u32> {
        self.daily.get(day as usize).copied()
    }
}

/// Which day it is for warm-up.
#[derive(Debug)]
pub enum Calendar {
    /// Days since the Unix epoch, in UTC.
    Utc,
    /// A counter that only [`Calendar::advance`] moves.
    Manual(AtomicU32),
}

impl Calendar {
    pub fn today(&self) -> u32 {
        match self {
            Calendar::Utc => (unix_secs() / 86_400) as u32,
            Calendar::Manual(day) => day.load(Ordering::Acquire),
        }
    }

    /// When it may be tomorrow: the next UTC midnight, or for the manual
    /// calendar a minute from now (an advance wakes every core anyway).
    pub fn tomorrow_at(&self, now: Instant) -> Instant {
        match self {
            Calendar::Utc => now + Duration::from_secs(86_400 - unix_secs() % 86_400),
            Calendar::Manual(_) => now + Duration::from_secs(60),
        }
    }

    /// Ends the day (manual calendar only); returns the new day.
    pub fn advance(&self) -> Option<u32> {
        match self {
            Calendar::Utc => None,
            Calendar::Manual(day) => Some(day.fetch_add(1, Ordering::AcqRel) + 1),
        }
    }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One pair's progress as it stands: the date of `sent`, the plan day,
/// whether that date's day is held, and the messages sent that date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    pub date: u32,
    pub day: u32,
    pub held: bool,
    pub sent: u32,
}

/// Bits of each field in the packed word: sent 31, held 1, day 12, date 20.
const SENT_BITS: u32 = 31;
const DAY_MAX: u32 = (1 << 12) - 1;
const DATE_MASK: u32 = (1 << 20) - 1;

impl State {
    fn pack(self) -> u64 {
        u64::from(self.sent.min(DAILY_MAX))
            | u64::from(self.held) << SENT_BITS
            | u64::from(self.day.min(DAY_MAX)) << 32
            | u64::from(self.date & DATE_MASK) << 44
    }

    fn unpack(word: u64) -> State {
        State {
            sent: (word & ((1 << SENT_BITS) - 1)) as u32,
            held: word >> SENT_BITS & 1 == 1,
            day: (word >> 32) as u32 & DAY_MAX,
            date: (word >> 44) as u32 & DATE_MASK,
        }
    }

    /// The state on `today`: a past date on which the source sent and was
    /// not held moves the plan on a day. A `today` before the stored date
    /// (a core that read the calendar just before midnight, a clock stepped
    /// back) is the stored date: the plan never goes back or skips a day.
    pub fn on(self, today: u32) -> State {
        if today & DATE_MASK <= self.date {
            return self;
        }
        let counts = self.sent > 0 && !self.held;
        State {
            date: today & DATE_MASK,
            day: (self.day + u32::from(counts)).min(DAY_MAX),
            held: false,
            sent: 0,
        }
    }
}

/// One (source, provider) pair's progress, shared by every core.
#[derive(Debug)]
pub struct Progress(AtomicU64);

/// A message counted against today's volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// It was the last of today's volume.
    pub last: bool,
    pub state: State,
}

impl Progress {
    fn new(state: State) -> Progress {
        Progress(AtomicU64::new(state.pack()))
    }

    pub fn state(&self, today: u32) -> State {
        State::unpack(self.0.load(Ordering::Acquire)).on(today)
    }

    /// Whether `plan` lets one more message go today.
    pub fn has_room(&self, plan: &Plan, today: u32) -> bool {
        let s = self.state(today);
        plan.volume(s.day).is_none_or(|v| s.sent < v)
    }

    /// Counts one message against today's volume; `None`: none is left.
    pub fn take(&self, plan: &Plan, today: u32) -> Option<Taken> {
        let mut word = self.0.load(Ordering::Acquire);
        loop {
            let s = State::unpack(word).on(today);
            let volume = plan.volume(s.day);
            if volume.is_some_and(|v| s.sent >= v) {
                return None;
            }
            let next = State {
                sent: s.sent.saturating_add(1).min(DAILY_MAX),
                ..s
            };
            match self.0.compare_exchange_weak(
                word,
                next.pack(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    return Some(Taken {
                        last: volume == Some(next.sent),
                        state: next,
                    })
                }
                Err(now) => word = now,
            }
        }
    }

    /// Keeps the pair on its plan day: today will not count.
    pub fn hold(&self, today: u32) -> State {
        let mut word = self.0.load(Ordering::Acquire);
        loop {
            let held = State {
                held: true,
                ..State::unpack(word).on(today)
            };
            match self.0.compare_exchange_weak(
                word,
                held.pack(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return held,
                Err(now) => word = now,
            }
        }
    }
}

/// Every pair's progress and the calendar, shared by every core and kept
/// across reloads.
#[derive(Debug)]
pub struct Warmups {
    pub calendar: Calendar,
    pairs: Mutex<HashMap<(String, String), Arc<Progress>>>,
    file: Option<PathBuf>,
    /// What the file holds (as last written or read), so an unchanged
    /// state is not written and synced again.
    written: Mutex<Vec<u8>>,
}

/// The state file as written.
#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    /// The manual calendar's day.
    manual_day: u32,
    pairs: Vec<SavedPair>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedPair {
    source: String,
    provider: String,
    date: u32,
    day: u32,
    held: bool,
    sent: u32,
}

impl Warmups {
    /// The progress saved in `file` (none if it does not exist yet); an
    /// unreadable or damaged file is an error, not a fresh start, which
    /// would send a cold address's full volume.
    pub fn open(file: Option<PathBuf>, manual: bool) -> Result<Warmups, String> {
        let (saved, written) = match &file {
            Some(path) => read(path)?,
            None => (None, Vec::new()),
        };
        let manual_day = saved.as_ref().map_or(0, |s| s.manual_day);
        let pairs = saved
            .into_iter()
            .flat_map(|s| s.pairs)
            .map(|p| {
                let state = State {
                    date: p.date,
                    day: p.day,
                    held: p.held,
                    sent: p.sent,
                };
                ((p.source, p.provider), Arc::new(Progress::new(state)))
            })
            .collect();
        Ok(Warmups {
            calendar: if manual {
                Calendar::Manual(AtomicU32::new(manual_day))
            } else {
                Calendar::Utc
            },
            pairs: Mutex::new(pairs),
            file,
            written: Mutex::new(written),
        })
    }

    /// The progress of `source` with `provider`; `None` past [`PAIRS_MAX`].
    pub fn progress(&self, source: &str, provider: &str) -> Option<Arc<Progress>> {
        let mut pairs = self.pairs.lock().expect("not poisoned");
        let key = (source.to_string(), provider.to_string());
        if let Some(p) = pairs.get(&key) {
            return Some(p.clone());
        }
        if pairs.len() >= PAIRS_MAX {
            return None;
        }
        let fresh = State {
            date: self.calendar.today() & DATE_MASK,
            day: 0,
            held: false,
            sent: 0,
        };
        Some(
            pairs
                .entry(key)
                .or_insert(Arc::new(Progress::new(fresh)))
                .clone(),
        )
    }

    /// Every pair's state today, by source then provider.
    pub fn states(&self) -> Vec<(String, String, State)> {
        let today = self.calendar.today();
        let pairs = self.pairs.lock().expect("not poisoned");
        let mut out: Vec<_> = pairs
            .iter()
            .map(|((s, p), progress)| (s.clone(), p.clone(), progress.state(today)))
            .collect();
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    }

    /// Writes the progress to the state file: a new file, synced, renamed
    /// over the old one; nothing when it has not changed (nor when no
    /// source has warmed and the file does not exist). Blocking: never
    /// called on a core.
    pub fn save(&self) -> Result<(), String> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let saved = Saved {
            manual_day: match &self.calendar {
                Calendar::Manual(d) => d.load(Ordering::Acquire),
                Calendar::Utc => 0,
            },
            pairs: self
                .pairs
                .lock()
                .expect("not poisoned")
                .iter()
                .map(|((source, provider), p)| {
                    let s = State::unpack(p.0.load(Ordering::Acquire));
                    SavedPair {
                        source: source.clone(),
                        provider: provider.clone(),
                        date: s.date,
                        day: s.day,
                        held: s.held,
                        sent: s.sent,
                    }
                })
                .collect(),
        };
        let mut saved = saved;
        // In a fixed order, so the same state makes the same bytes.
        saved
            .pairs
            .sort_by(|a, b| (&a.source, &a.provider).cmp(&(&b.source, &b.provider)));
        let bytes = serde_json::to_vec_pretty(&saved).map_err(|e| e.to_string())?;
        let mut written = self.written.lock().expect("not poisoned");
        let unused = saved.pairs.is_empty() && saved.manual_day == 0;
        if *written == bytes || (written.is_empty() && unused) {
            return Ok(());
        }
        write(path, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        *written = bytes;
        Ok(())
    }
}

/// The saved state and the file's bytes; none if there is no file yet.
fn read(path: &Path) -> Result<(Option<Saved>, Vec<u8>), String> {
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(saved) => Ok((Some(saved), bytes)),
            Err(e) => Err(format!(
                "warm-up state {}: {e} (restore it, or remove it to start every warming source from its first day)",
                path.display()
            )),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((None, Vec::new())),
        Err(e) => Err(format!("warm-up state {}: {e}", path.display())),
    }
}

fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.new");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// How often the progress is written while the engine runs.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            name: "p".into(),
            daily: vec![2, 3],
            overflow: Overflow::Queue,
        }
    }

    #[test]
    fn the_state_packs_into_one_word() {
        let s = State {
            date: 20_791,
            day: 300,
            held: true,
            sent: DAILY_MAX,
        };
        assert_eq!(State::unpack(s.pack()), s);
    }

    #[test]
    fn only_sending_days_that_were_not_held_move_the_plan_on() {
        let (plan, p) = (plan(), Progress::new(State::unpack(0).on(10)));
        assert!(p.take(&plan, 10).is_some_and(|t| !t.last));
        assert!(p.take(&plan, 10).is_some_and(|t| t.last));
        assert_eq!(p.take(&plan, 10), None, "day 1's volume is 2");
        // Day 11 sent nothing: day 12 is still the second sending day.
        assert_eq!(p.state(11).day, 1);
        assert_eq!(p.state(12).day, 1);
        for _ in 0..3 {
            assert!(p.take(&plan, 12).is_some());
        }
        assert_eq!(p.take(&plan, 12), None, "day 2's volume is 3");
        p.hold(12);
        assert_eq!(p.state(13).day, 1, "a held day does not count");
        assert!(p.take(&plan, 13).is_some());
        assert_eq!(p.state(14).day, 2);
        for _ in 0..100 {
            assert!(p.take(&plan, 14).is_some(), "warm after the plan");
        }
        assert!(p.has_room(&plan, 14));
        assert_eq!(p.state(13).day, 2, "a late reader does not roll back");
        assert!(p.take(&plan, 13).is_some_and(|t| t.state.date == 14));
    }

    #[test]
    fn the_progress_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("warmup.json");
        let w = Warmups::open(Some(path.clone()), true).unwrap();
        let p = w.progress("ip2", "big").unwrap();
        p.take(&plan(), w.calendar.today()).unwrap();
        w.calendar.advance();
        w.save().unwrap();
        let again = Warmups::open(Some(path.clone()), true).unwrap();
        assert_eq!(again.calendar.today(), 1);
        let s = again.progress("ip2", "big").unwrap().state(1);
        assert_eq!((s.day, s.sent), (1, 0));
        let before = std::fs::metadata(&path).unwrap().modified().unwrap();
        again.save().unwrap();
        let after = std::fs::metadata(&path).unwrap().modified().unwrap();
        assert_eq!(before, after, "an unchanged state is not written again");
        std::fs::write(&path, "{ not json").unwrap();
        let e = Warmups::open(Some(path), true).unwrap_err();
        assert!(e.contains("remove it"), "{e}");
    }
}
