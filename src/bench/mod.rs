//! `spate bench`: load tools on spate's own runtime — a fault-injecting sink,
//! a pipelining load generator, and the peak-day run that ties them to an
//! engine. They are test peers for benchmarks, never part of the engine.

pub mod inject;
pub mod peak;
pub mod sink;
