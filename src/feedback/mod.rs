//! What comes back from recipients and their mailbox providers: complaint
//! reports in the Abuse Reporting Format ([`arf`]) and one-click
//! unsubscribe tokens ([`unsubscribe`]).
//!
//! Pure: bytes and strings in, typed values out. Must never do I/O, touch
//! the queue or suppress anyone itself: callers decide what a report or a
//! token leads to. Must never trust what it reads: every field of a report
//! is attacker-controlled (anyone can send a "report", and a genuine one
//! quotes whatever the original's sender wrote), so values are bounded,
//! nothing read may panic, and a token counts only once its MAC checks.

pub mod arf;
pub mod unsubscribe;
