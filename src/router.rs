//! Which core owns a destination domain, and the split of a message's
//! recipients by owner.
//!
//! Ownership is a pure function of the lower-cased domain and the number of
//! cores: FNV-1a (64-bit) of the domain, then Lamping and Veach's jump
//! consistent hash, so that growing from n to n+1 cores moves only about
//! 1/(n+1) of the domains. It must stay stable across releases: queues are
//! rebuilt from the spool at start with it.

use crate::message::{MessageHandle, Recipients};

/// FNV-1a, 64-bit, of the ASCII-lower-cased bytes.
fn fnv1a_lower(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b.to_ascii_lowercase() as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Jump consistent hash: a bucket in `0..buckets` for `key`.
fn jump_hash(mut key: u64, buckets: usize) -> usize {
    let (mut b, mut j) = (-1i64, 0i64);
    while j < buckets as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as usize
}

/// The core that owns `domain`, one of `0..cores`.
pub fn owner_of(domain: &str, cores: usize) -> usize {
    assert!(cores > 0);
    jump_hash(fnv1a_lower(domain.as_bytes()), cores)
}

/// Splits a handle into one handle per owning core, each with only the
/// recipients that core owns. The body is shared, never copied.
pub fn split_by_owner(handle: MessageHandle, cores: usize) -> Vec<(usize, MessageHandle)> {
    if cores == 1 {
        return vec![(0, handle)];
    }
    let mut by_core: Vec<(usize, Recipients)> = Vec::new();
    let envelope = handle.envelope();
    for r in &handle.recipients {
        let core = owner_of(&envelope.domain(r.index), cores);
        match by_core.iter_mut().find(|(c, _)| *c == core) {
            Some((_, list)) => list.push(*r),
            None => by_core.push((core, smallvec::smallvec![*r])),
        }
    }
    drop(envelope);
    if by_core.len() == 1 {
        return vec![(by_core[0].0, handle)];
    }
    by_core
        .into_iter()
        .map(|(core, recipients)| {
            (
                core,
                MessageHandle {
                    recipients,
                    ..handle.clone()
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_ignores_case_and_is_stable() {
        assert_eq!(owner_of("Example.COM", 8), owner_of("example.com", 8));
        // Pinned values: changing the hash would strand queued mail.
        assert_eq!(fnv1a_lower(b"example.com"), 0x576846634e2714c6);
        assert_eq!(
            [
                owner_of("gmail.com", 4),
                owner_of("yahoo.com", 4),
                owner_of("outlook.com", 4)
            ],
            [3, 3, 2]
        );
        assert_eq!(owner_of("a", 1), 0);
    }

    #[test]
    fn domains_spread_over_cores() {
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            counts[owner_of(&format!("domain{i}.example"), 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }

    #[test]
    fn adding_a_core_moves_few_domains() {
        let moved = (0..10_000).filter(|i| {
            let d = format!("d{i}.test");
            owner_of(&d, 4) != owner_of(&d, 5)
        });
        let moved = moved.count();
        assert!((1500..2500).contains(&moved), "{moved} of 10000 moved");
    }
}
