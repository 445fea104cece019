//! Fixed-bucket histograms that one core keeps for its stages (the spool's
//! group-commit batches and fdatasync times, the listener's final-dot
//! latency). Plain cells: a core's meters are only touched by its thread;
//! the admin server reads them as a [`Snapshot`] sent over the mesh.

use std::cell::Cell;
use std::time::Duration;

/// Upper bounds (seconds) for latencies, from 50 µs to 10 s.
pub const LATENCY_BOUNDS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];
/// Upper bounds for counts per batch.
pub const BATCH_BOUNDS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

pub struct Histogram {
    bounds: &'static [f64],
    /// One per bound, and one past the last (+Inf).
    counts: Vec<Cell<u64>>,
    sum: Cell<f64>,
}

/// A histogram's counts at one moment, with each bucket's own count (not
/// cumulative); the last bucket is +Inf.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub bounds: &'static [f64],
    pub counts: Vec<u64>,
    pub sum: f64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| Cell::new(0)).collect(),
            sum: Cell::new(0.0),
        }
    }

    pub fn observe(&self, value: f64) {
        let i = self.bounds.partition_point(|b| *b < value);
        self.counts[i].set(self.counts[i].get() + 1);
        self.sum.set(self.sum.get() + value);
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            bounds: self.bounds,
            counts: self.counts.iter().map(Cell::get).collect(),
            sum: self.sum.get(),
        }
    }
}

impl Snapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds another core's counts (same bounds) to these.
    pub fn add(&mut self, other: &Snapshot) {
        if self.counts.is_empty() {
            *self = other.clone();
            return;
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum += other.sum;
    }

    /// (upper bound, own count) pairs, +Inf last.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        self.bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts.iter().copied())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_lands_in_the_first_bucket_that_holds_it() {
        let h = Histogram::new(BATCH_BOUNDS);
        for v in [1.0, 1.0, 3.0, 5000.0] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 4);
        let b = s.buckets();
        assert_eq!(b[0], (1.0, 2));
        assert_eq!(b[2], (4.0, 1));
        assert_eq!(*b.last().unwrap(), (f64::INFINITY, 1));
        assert_eq!(s.sum, 5005.0);
    }
}
