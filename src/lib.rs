//! spate: a thread-per-core, io_uring mail transfer agent for bulk outbound
//! delivery.
//!
//! Data flows through the modules in the order they are listed here:
//!
//! ```text
//!  SMTP client ──▶ listener ──▶ spool ──▶ router ──▶ mesh ──▶ queue ──▶ delivery ──▶ MX
//!                 (session,    (append,   (domain →  (handle   (per-domain,  (dns, smtp client,
//!                  DATA, dkim)  fdatasync) core)      to owner) per core)     retries, bounces, log)
//! ```
//!
//! Every core runs one glommio executor pinned to its CPU (`engine`). A core
//! owns its listener sockets (SO_REUSEPORT), its spool segments, its queues
//! and the destination domains that hash to it. A message accepted on one core
//! is written to that core's spool, made durable, then handed to the cores
//! that own its recipients' domains as a [`message::MessageHandle`]: an
//! id, a slice of the shared read-only mapping of the segment, and the
//! recipients. The body is never copied after it is written.
//!
//! Modules that do no I/O (`config`, `router`, `listener::command`,
//! `listener::data`) are plain functions over bytes and are unit-tested
//! directly; the spool has fault hooks so tests can make syncs hang or fail.

pub mod admin;
pub mod bench;
pub mod bounce;
pub mod classify;
pub mod complaints;
pub mod config;
pub mod conn;
pub mod control;
pub mod ctl;
pub mod delivery;
pub mod delivery_log;
pub mod dkim;
pub mod dns;
pub mod dot;
pub mod engine;
pub mod feedback;
pub mod fuzzing;
pub mod inject;
pub mod listener;
pub mod local;
pub mod mesh;
pub mod message;
pub mod meter;
pub mod queue;
pub mod router;
pub mod shaping;
pub mod spool;
pub mod spool_tool;
pub mod suppression;
pub mod text;
pub mod tls;
pub mod top;
pub mod webhook;
