//! One batch of delivery-log records, built from the log's bytes: whole
//! lines only (a line is whole once it ends in '\n'), the kinds the
//! webhook wants, at most `batch_max` records and [`BODY_BYTES_MAX`]
//! bytes. Pure: no I/O, so it is tested on bytes.
//!
//! A line that is not a JSON record (half a line left by a kill -9, which
//! the next run's `DeliveryLog::open` ends with a '\n') is skipped and
//! counted, never sent. The batch's byte range `[start, end)` covers every
//! line it consumed, sent or skipped, so the cursor moves past them all.

use crate::delivery_log::Kind;
use serde::Deserialize;

/// The most a batch's records take (the body's `events`).
pub const BODY_BYTES_MAX: usize = 8 << 20;
/// A line longer than this is not a record spate wrote: it is skipped.
pub const LINE_BYTES_MAX: usize = 1 << 20;

/// What a line says about itself: only its kind is looked at.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
}

#[derive(Debug)]
pub struct Batch {
    /// Log offset of the first byte this batch covers (the cursor).
    pub start: u64,
    /// Log offset just past the last line consumed.
    pub end: u64,
    /// The records, exactly as logged, separated by ','.
    events: Vec<u8>,
    count: usize,
    /// Inside a line longer than [`LINE_BYTES_MAX`]: drop up to its '\n'.
    skipping: bool,
}

impl Batch {
    pub fn new(start: u64) -> Batch {
        Batch {
            start,
            end: start,
            events: Vec::new(),
            count: 0,
            skipping: false,
        }
    }

    /// The next batch, starting where this one ended.
    pub fn next(&self) -> Batch {
        Batch {
            skipping: self.skipping,
            ..Batch::new(self.end)
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn is_full(&self, batch_max: usize) -> bool {
        self.count >= batch_max || self.events.len() >= BODY_BYTES_MAX
    }

    /// Takes the whole lines of `bytes` (read from the log at `self.end`)
    /// until the batch is full; returns how many lines were not records.
    pub fn feed(&mut self, bytes: &[u8], kinds: &[Kind], batch_max: usize) -> usize {
        let mut pos = 0;
        let mut garbage = 0;
        while !self.is_full(batch_max) {
            let Some(nl) = memchr::memchr(b'\n', &bytes[pos..]) else {
                break;
            };
            let line = &bytes[pos..pos + nl];
            pos += nl + 1;
            if std::mem::take(&mut self.skipping) || line.is_empty() {
                continue;
            }
            match kind_of(line) {
                Some(Some(k)) if kinds.contains(&k) => self.push(line),
                Some(_) => {}
                None => garbage += 1,
            }
        }
        if pos == 0 && bytes.len() >= LINE_BYTES_MAX {
            // No end in sight: not a line spate wrote.
            pos = bytes.len();
            garbage += usize::from(!self.skipping);
            self.skipping = true;
        }
        self.end += pos as u64;
        garbage
    }

    fn push(&mut self, line: &[u8]) {
        if self.count > 0 {
            self.events.push(b',');
        }
        self.events.extend_from_slice(line);
        self.count += 1;
    }

    /// `{"webhook":NAME,"core":N,"events":[...]}`.
    pub fn body(&self, webhook: &str, core: usize) -> Vec<u8> {
        let name = serde_json::to_string(webhook).expect("a string serializes");
        let mut body = Vec::with_capacity(self.events.len() + name.len() + 48);
        body.extend_from_slice(
            format!("{{\"webhook\":{name},\"core\":{core},\"events\":[").as_bytes(),
        );
        body.extend_from_slice(&self.events);
        body.extend_from_slice(b"]}");
        body
    }

    /// The `X-Spate-Batch` id: the core and the byte range. The same range
    /// re-sent (a retry, or after a restart) has the same id.
    pub fn id(&self, core: usize) -> String {
        format!("{core}-{}-{}", self.start, self.end)
    }
}

/// `None`: not a JSON record; `Some(None)`: a record of a kind this
/// version does not know (sent to no one).
fn kind_of(line: &[u8]) -> Option<Option<Kind>> {
    let head: Head<'_> = serde_json::from_slice(line).ok()?;
    Some(Kind::parse(&head.kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kind: &str, n: u32) -> String {
        format!("{{\"type\":\"{kind}\",\"id\":\"{n}\"}}\n")
    }

    fn events(b: &Batch) -> serde_json::Value {
        serde_json::from_slice::<serde_json::Value>(&b.body("w", 3)).unwrap()["events"].clone()
    }

    #[test]
    fn whole_lines_only_and_the_end_moves_past_them() {
        let log = format!(
            "{}{}{{\"type\":\"Deli",
            rec("Delivery", 1),
            rec("Bounce", 2)
        );
        let mut b = Batch::new(100);
        assert_eq!(b.feed(log.as_bytes(), &Kind::ALL, 10), 0);
        assert_eq!(b.len(), 2);
        assert_eq!(b.end, 100 + (log.len() - "{\"type\":\"Deli".len()) as u64);
        assert_eq!(events(&b)[1]["id"], "2");
        assert_eq!(b.id(3), format!("3-100-{}", b.end));
        let body: serde_json::Value = serde_json::from_slice(&b.body("w", 3)).unwrap();
        assert_eq!(
            (body["webhook"].as_str(), body["core"].as_u64()),
            (Some("w"), Some(3))
        );
    }

    #[test]
    fn garbage_is_skipped_and_counted_and_kinds_filtered() {
        let log = format!(
            "{}{{\"type\":\"Deliv\n\n{}not json\n{}",
            rec("Reception", 1),
            rec("Delivery", 2),
            rec("Bounce", 3)
        );
        let mut b = Batch::new(0);
        assert_eq!(
            b.feed(log.as_bytes(), &[Kind::Delivery, Kind::Bounce], 10),
            2
        );
        assert_eq!(b.len(), 2);
        assert_eq!(b.end, log.len() as u64);
        assert_eq!(events(&b)[0]["id"], "2");
        assert_eq!(events(&b)[1]["id"], "3");
    }

    #[test]
    fn batch_max_stops_at_a_line_boundary() {
        let log: String = (0..5).map(|i| rec("Delivery", i)).collect();
        let mut b = Batch::new(0);
        b.feed(log.as_bytes(), &Kind::ALL, 3);
        assert!(b.is_full(3));
        assert_eq!(b.end, 3 * rec("Delivery", 0).len() as u64);
        let mut next = b.next();
        next.feed(&log.as_bytes()[b.end as usize..], &Kind::ALL, 3);
        assert_eq!(next.len(), 2);
        assert_eq!(events(&next)[0]["id"], "3");
        assert_eq!(next.end, log.len() as u64);
    }

    #[test]
    fn an_endless_line_is_skipped_whole() {
        let long = vec![b'x'; LINE_BYTES_MAX];
        let mut b = Batch::new(0);
        assert_eq!(b.feed(&long, &Kind::ALL, 10), 1);
        assert_eq!(b.end, LINE_BYTES_MAX as u64);
        let tail = format!("xxx\n{}", rec("Delivery", 7));
        let mut next = b.next();
        assert_eq!(next.feed(tail.as_bytes(), &Kind::ALL, 10), 0);
        assert_eq!(next.len(), 1);
        assert_eq!(events(&next)[0]["id"], "7");
    }
}
