//! Delivery-log records for the admin API: live, as server-sent events
//! (`/api/v1/events`, fed by every core's [`crate::delivery_log::stream`]),
//! and past, read back from the log files for a message trace.

use super::http::{Answer, ApiError};
use super::routes::Call;
use super::Admin;
use crate::control::{Reply, Request};
use crate::delivery_log::stream::{self, Chunk, Filter};
use crate::delivery_log::Kind;
use bytes::Bytes;
use futures_lite::StreamExt;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

/// A comment line this often keeps idle streams (and proxies) open.
pub const KEEPALIVE: Duration = Duration::from_secs(15);
/// How far back from its end each core's log file is read for a trace.
pub const HISTORY_BYTES_MAX: u64 = 64 << 20;
/// Most records one trace returns.
pub const HISTORY_RECORDS_MAX: usize = 1000;

fn filter(call: &Call) -> Result<Filter, ApiError> {
    let mut f = Filter::default();
    if let Some(kinds) = call.query("kind") {
        for k in kinds.split(',').filter(|k| !k.is_empty()) {
            let kind = Kind::parse(k).ok_or_else(|| {
                let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                ApiError::bad(format!("kind {k:?} is not one of {}", names.join(", ")))
            })?;
            f.kinds.push(kind);
        }
    }
    f.domain = call.query("domain").unwrap_or_default().to_string();
    f.tenant = call.query("tenant").unwrap_or_default().to_string();
    Ok(f)
}

/// Subscribes to every core's log and streams what they send. The first
/// event (a comment, `: subscribed`) comes once every core has the
/// subscription: a record written after it is in the stream.
pub async fn stream(admin: &Rc<Admin>, call: &Call) -> Answer {
    let f = filter(call)?;
    let (tx, rx) = stream::channel();
    let replies = admin
        .control
        .ask_all(|| Request::Subscribe {
            filter: f.clone(),
            tx: tx.clone(),
        })
        .await;
    drop(tx);
    for r in replies {
        match r {
            Reply::Subscribed(true) => {}
            Reply::Subscribed(false) => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("at most {} event streams at once", stream::SUBSCRIBERS_MAX),
                ))
            }
            Reply::Unavailable(c) => return Err(ApiError::unavailable(c)),
            _ => unreachable!(),
        }
    }
    let first = Some(Bytes::from_static(b": subscribed\n\n"));
    let frames = futures_lite::stream::unfold((rx, first), |(mut rx, first)| async move {
        if let Some(b) = first {
            return Some((Ok(Frame::data(b)), (rx, None)));
        }
        let next = futures_lite::future::or(async { Some(rx.next().await) }, async {
            glommio::timer::sleep(KEEPALIVE).await;
            None
        })
        .await;
        let bytes = match next {
            // Every core's end is gone: the engine is stopping.
            Some(None) => return None,
            Some(Some(Chunk::Events(events))) => Bytes::from(events),
            Some(Some(Chunk::Lost(n))) => Bytes::from(format!("event: lost\ndata: {n}\n\n")),
            None => Bytes::from_static(b": keepalive\n\n"),
        };
        Some((Ok::<_, std::io::Error>(Frame::data(bytes)), (rx, None)))
    });
    let body: super::http::Body = Box::pin(StreamBody::new(frames));
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(r)
}

/// The records of message `id`, or of `recipient`, in the last
/// [`HISTORY_BYTES_MAX`] of each core's log file, oldest first. Blocking:
/// runs off the cores.
pub fn history(dir: &Path, id: Option<&str>, recipient: Option<&str>) -> Vec<serde_json::Value> {
    match (id, recipient) {
        (Some(id), _) => history_of(dir, "id", id),
        (None, Some(r)) => history_of(dir, "recipient", r),
        (None, None) => Vec::new(),
    }
}

/// The records whose `key` is `value`, as [`history`] finds them.
pub fn history_of(dir: &Path, key: &str, value: &str) -> Vec<serde_json::Value> {
    let needle = format!("\"{key}\":{}", serde_json::Value::from(value));
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("delivery-core") && name.ends_with(".jsonl")) {
            continue;
        }
        for line in tail(&entry.path(), HISTORY_BYTES_MAX).split(|b| *b == b'\n') {
            if memchr::memmem::find(line, needle.as_bytes()).is_none() {
                continue;
            }
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) {
                out.push(v);
            }
        }
    }
    out.sort_by_key(|v| v["time_ms"].as_u64().unwrap_or(0));
    // The newest, when there are more.
    let extra = out.len().saturating_sub(HISTORY_RECORDS_MAX);
    out.drain(..extra);
    out
}

/// The last `max` bytes of a file, from the start of a line.
fn tail(path: &Path, max: u64) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let start = len.saturating_sub(max);
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_err() || f.read_to_end(&mut buf).is_err() {
        return Vec::new();
    }
    if start > 0 {
        let first = memchr::memchr(b'\n', &buf).map_or(buf.len(), |i| i + 1);
        buf.drain(..first);
    }
    buf
}
