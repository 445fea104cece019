//! The per-core answer cache: a bounded map from a question to an answer and
//! the instant it expires.
//!
//! It owns no clock: every call takes `now`, so tests can make time pass.
//! It never grows past its bound: when full, an insert first drops expired
//! entries and then, if still full, an eighth of the entries, whichever they
//! are. Dropping a batch rather than one keeps a full cache of live entries
//! from paying a full scan on every insert.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

pub(crate) struct Cache<K, V> {
    entries: HashMap<K, Entry<V>>,
    entries_max: usize,
}

struct Entry<V> {
    value: V,
    expires: Instant,
}

impl<K: Hash + Eq + Clone, V: Clone> Cache<K, V> {
    /// A cache of at most `entries_max` entries; 0 turns caching off.
    pub(crate) fn new(entries_max: usize) -> Cache<K, V> {
        Cache {
            entries: HashMap::new(),
            entries_max,
        }
    }

    /// The live answer for `key`, if any. An expired entry is removed.
    pub(crate) fn get(&mut self, key: &K, now: Instant) -> Option<V> {
        let entry = self.entries.get(key)?;
        if entry.expires <= now {
            self.entries.remove(key);
            return None;
        }
        Some(entry.value.clone())
    }

    /// Keeps `value` for `ttl` from `now`, replacing any entry for `key`.
    pub(crate) fn insert(&mut self, key: K, value: V, ttl: Duration, now: Instant) {
        if self.entries_max == 0 || ttl.is_zero() {
            return;
        }
        if !self.entries.contains_key(&key) && self.entries.len() >= self.entries_max {
            self.make_room(now);
        }
        let expires = now + ttl;
        self.entries.insert(key, Entry { value, expires });
        assert!(self.entries.len() <= self.entries_max);
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Drops expired entries; if that frees nothing, drops arbitrary ones
    /// until an eighth (at least one) of the room is free.
    fn make_room(&mut self, now: Instant) {
        self.entries.retain(|_, e| e.expires > now);
        if self.entries.len() < self.entries_max {
            return;
        }
        let target = self.entries_max - (self.entries_max / 8).max(1);
        let excess = self.entries.len() - target;
        let victims: Vec<K> = self.entries.keys().take(excess).cloned().collect();
        for key in &victims {
            self.entries.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn entry_lives_for_its_ttl() {
        let t0 = Instant::now();
        let mut cache = Cache::new(4);
        cache.insert("a", 1, 10 * SEC, t0);
        assert_eq!(cache.get(&"a", t0), Some(1));
        assert_eq!(cache.get(&"a", t0 + 9 * SEC), Some(1));
        assert_eq!(cache.get(&"a", t0 + 10 * SEC), None);
        assert_eq!(cache.len(), 0, "an expired entry is removed when seen");
    }

    #[test]
    fn insert_replaces() {
        let t0 = Instant::now();
        let mut cache = Cache::new(1);
        cache.insert("a", 1, SEC, t0);
        cache.insert("a", 2, 5 * SEC, t0);
        assert_eq!(cache.get(&"a", t0 + 2 * SEC), Some(2));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn full_cache_drops_expired_entries_first() {
        let t0 = Instant::now();
        let mut cache = Cache::new(3);
        cache.insert("short", 1, SEC, t0);
        cache.insert("long1", 2, 100 * SEC, t0);
        cache.insert("long2", 3, 100 * SEC, t0);
        cache.insert("new", 4, 100 * SEC, t0 + 2 * SEC);
        let now = t0 + 3 * SEC;
        assert_eq!(cache.get(&"long1", now), Some(2));
        assert_eq!(cache.get(&"long2", now), Some(3));
        assert_eq!(cache.get(&"new", now), Some(4));
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn full_cache_of_live_entries_stays_bounded() {
        let t0 = Instant::now();
        let mut cache = Cache::new(16);
        for i in 0..1000 {
            cache.insert(i, i, 100 * SEC, t0);
            assert!(cache.len() <= 16);
        }
        assert_eq!(cache.get(&999, t0), Some(999), "the newest entry is kept");
    }

    #[test]
    fn zero_size_or_zero_ttl_caches_nothing() {
        let t0 = Instant::now();
        let mut off = Cache::new(0);
        off.insert("a", 1, SEC, t0);
        assert_eq!(off.get(&"a", t0), None);
        let mut cache = Cache::new(4);
        cache.insert("a", 1, Duration::ZERO, t0);
        assert_eq!(cache.len(), 0);
    }
}
