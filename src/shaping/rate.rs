//! Rates as operators write them (`"100/s"`, `"5000/h,burst=50"`) and the
//! GCRA limiter that enforces one.
//!
//! Pure: time is passed in, so tests make it pass at will.

use std::time::{Duration, Instant};

/// N events per period, with up to `burst` of them at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u64,
    pub period: Duration,
    pub burst: u64,
}

impl Rate {
    /// Parses `N/s`, `N/min`, `N/h` or `N/d`, optionally followed by
    /// `,burst=B`. The burst defaults to a tenth of N (at least 1).
    pub fn parse(s: &str) -> Result<Rate, String> {
        let bad = || format!("{s:?} is not a rate like \"100/s\" or \"5000/h,burst=50\"");
        let (rate, burst) = match s.split_once(',') {
            Some((rate, burst)) => (rate.trim(), Some(burst.trim())),
            None => (s.trim(), None),
        };
        let (count, unit) = rate.split_once('/').ok_or_else(bad)?;
        let count: u64 = count.trim().parse().map_err(|_| bad())?;
        let period = match unit.trim() {
            "s" => Duration::from_secs(1),
            "min" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            _ => return Err(bad()),
        };
        if count == 0 || count > 10_000_000 {
            return Err(format!("{s:?}: the count must be from 1 to 10000000"));
        }
        let burst = match burst {
            None => (count / 10).max(1),
            Some(b) => {
                let b = b.strip_prefix("burst=").ok_or_else(bad)?;
                match b.trim().parse::<u64>() {
                    Ok(b) if (1..=10_000_000).contains(&b) => b,
                    _ => return Err(format!("{s:?}: the burst must be from 1 to 10000000")),
                }
            }
        };
        Ok(Rate {
            count,
            period,
            burst,
        })
    }

    /// The time between two events at the steady rate.
    pub fn interval(&self) -> Duration {
        self.period / self.count as u32
    }

    /// The rate times `scale` (0 to 1), at least 1 per period.
    pub fn scaled(&self, scale: f64) -> Rate {
        if scale >= 1.0 {
            return *self;
        }
        let times = |n: u64| ((n as f64 * scale).floor() as u64).max(1);
        Rate {
            count: times(self.count),
            burst: times(self.burst),
            period: self.period,
        }
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.period.as_secs() {
            1 => "s",
            60 => "min",
            3600 => "h",
            _ => "d",
        };
        write!(f, "{}/{unit},burst={}", self.count, self.burst)
    }
}

/// The generic cell rate algorithm: one "theoretical arrival time" per
/// limited thing. An event conforms if it comes no earlier than
/// `tat - (burst - 1) * interval`; each conforming event moves `tat` on by
/// one interval. A state whose `tat` has passed is the same as a new one.
#[derive(Debug, Clone, Copy)]
pub struct Gcra {
    tat: Option<Instant>,
}

impl Gcra {
    pub const fn new() -> Gcra {
        Gcra { tat: None }
    }

    /// Takes one event at `now` if `rate` allows it; otherwise says when
    /// the next one will conform.
    pub fn take(&mut self, rate: &Rate, now: Instant) -> Result<(), Instant> {
        let interval = rate.interval();
        let tolerance = interval * (rate.burst.saturating_sub(1)).min(u32::MAX as u64) as u32;
        let tat = self.tat.map_or(now, |t| t.max(now));
        let earliest = tat.checked_sub(tolerance).unwrap_or(now);
        if earliest > now {
            return Err(earliest);
        }
        self.tat = Some(tat + interval);
        Ok(())
    }

    /// When the next event will conform; `None`: it does now.
    pub fn due(&self, rate: &Rate, now: Instant) -> Option<Instant> {
        let mut probe = *self;
        probe.take(rate, now).err()
    }

    /// Whether this state says nothing a new one would not (it can be
    /// forgotten).
    pub fn is_idle(&self, now: Instant) -> bool {
        self.tat.is_none_or(|t| t <= now)
    }
}

impl Default for Gcra {
    fn default() -> Gcra {
        Gcra::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_their_default_burst() {
        let r = Rate::parse("100/s").unwrap();
        assert_eq!(
            (r.count, r.period, r.burst),
            (100, Duration::from_secs(1), 10)
        );
        let r = Rate::parse("5000/h, burst=50").unwrap();
        assert_eq!((r.count, r.period.as_secs(), r.burst), (5000, 3600, 50));
        assert_eq!(Rate::parse("3/min").unwrap().burst, 1);
        assert_eq!(Rate::parse("20/d").unwrap().to_string(), "20/d,burst=2");
        for bad in [
            "100",
            "100/w",
            "x/s",
            "0/s",
            "10/s,bust=3",
            "10/s,burst=0",
            "",
        ] {
            assert!(Rate::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_burst_then_the_steady_rate() {
        let rate = Rate::parse("10/s,burst=3").unwrap();
        let t0 = Instant::now();
        let mut g = Gcra::new();
        for _ in 0..3 {
            assert!(g.take(&rate, t0).is_ok());
        }
        let next = g.take(&rate, t0).unwrap_err();
        assert_eq!(next - t0, Duration::from_millis(100));
        assert!(g.take(&rate, next).is_ok());
        assert!(g.take(&rate, next).is_err());
        // Over any long stretch: no more than rate × time + burst.
        let mut taken = 0;
        let mut now = t0 + Duration::from_secs(10);
        let end = now + Duration::from_secs(10);
        while now < end {
            match g.take(&rate, now) {
                Ok(()) => taken += 1,
                Err(at) => now = at,
            }
        }
        assert!((100..=103).contains(&taken), "{taken}");
        assert!(g.is_idle(end + Duration::from_secs(1)));
    }
}
