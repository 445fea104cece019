//! The suppression lists as one core holds them: the global list (tenant
//! `""`) and one list per tenant, addresses compared without regard to
//! case. Pure data: no I/O, no clock; [`super::journal`] makes changes
//! durable and [`super`] carries them between cores.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Longest address kept (RFC 5321 4.5.3.1.3: a path is at most 256 octets).
pub const ADDRESS_BYTES_MAX: usize = 254;
/// Longest reason kept; longer ones are cut.
pub const REASON_BYTES_MAX: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Add,
    Remove,
}

/// One change to a list, as journaled and as carried between cores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    pub op: Op,
    /// `""`: the global list.
    #[serde(default)]
    pub tenant: String,
    pub address: String,
    /// Why: a bounce's reply, "complaint: ...", an operator's reason.
    #[serde(default)]
    pub reason: String,
    /// Who: a token's name, "bounce", "complaint", "unsubscribe".
    #[serde(default)]
    pub by: String,
    pub time_ms: u64,
}

impl Change {
    /// A change with its address lowercased and its reason cut to size;
    /// `Err` names what is wrong with the address.
    pub fn new(
        op: Op,
        tenant: &str,
        address: &str,
        reason: &str,
        by: &str,
        time_ms: u64,
    ) -> Result<Change, String> {
        let address = normalize(address)?;
        let reason = crate::text::cut(reason, REASON_BYTES_MAX).to_string();
        Ok(Change {
            op,
            tenant: tenant.to_string(),
            address,
            reason,
            by: by.to_string(),
            time_ms,
        })
    }

    pub fn domain(&self) -> &str {
        crate::message::domain_of(&self.address)
    }
}

/// The address as the lists key it: lowercased, without angle brackets.
pub fn normalize(address: &str) -> Result<String, String> {
    let a = address.trim();
    let a = a
        .strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .unwrap_or(a);
    let lower = a.to_lowercase();
    // Measured lowercased: lowercasing can lengthen a string (Ⱥ, İ).
    let ok = lower.len() <= ADDRESS_BYTES_MAX
        && lower
            .rsplit_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
        && !lower.contains(|c: char| c.is_whitespace() || c.is_control() || "<>,;".contains(c));
    if ok {
        Ok(lower)
    } else {
        Err(format!("{address:?} is not an email address"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub reason: Box<str>,
    pub by: Box<str>,
    pub time_ms: u64,
}

/// One entry as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub tenant: String,
    pub address: String,
    #[serde(flatten)]
    pub entry: Entry,
}

/// What applying a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Added,
    /// Already there (nothing changed at a commit; replayed from a
    /// journal, the newer reason and time are kept).
    Renewed,
    Removed,
    /// A removal of what was not there.
    Absent,
    /// The lists are full; nothing was added.
    Full,
}

/// Cloned once per core at start: every core holds a full copy.
#[derive(Clone)]
pub struct Lists {
    /// Keyed by `tenant \n address`.
    map: HashMap<Box<str>, Entry>,
    max: usize,
}

fn key(tenant: &str, address: &str) -> String {
    format!("{tenant}\n{address}")
}

impl Lists {
    pub fn new(max: usize) -> Lists {
        Lists {
            map: HashMap::new(),
            max,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn contains(&self, tenant: &str, address: &str) -> bool {
        self.map.contains_key(key(tenant, address).as_str())
    }

    pub fn apply(&mut self, c: &Change) -> Applied {
        let k = key(&c.tenant, &c.address);
        match c.op {
            Op::Remove => match self.map.remove(k.as_str()) {
                Some(_) => Applied::Removed,
                None => Applied::Absent,
            },
            Op::Add => {
                let entry = Entry {
                    reason: c.reason.as_str().into(),
                    by: c.by.as_str().into(),
                    time_ms: c.time_ms,
                };
                if let Some(e) = self.map.get_mut(k.as_str()) {
                    *e = entry;
                    return Applied::Renewed;
                }
                if self.map.len() >= self.max {
                    return Applied::Full;
                }
                self.map.insert(k.into(), entry);
                Applied::Added
            }
        }
    }

    /// The entry that suppresses `address` for `tenant`: the global list's
    /// first, then the tenant's. `address` must be normalized.
    pub fn check<'a>(&'a self, tenant: &'a str, address: &str) -> Option<(&'a str, &'a Entry)> {
        if let Some(e) = self.map.get(key("", address).as_str()) {
            return Some(("", e));
        }
        if tenant.is_empty() {
            return None;
        }
        self.map
            .get(key(tenant, address).as_str())
            .map(|e| (tenant, e))
    }

    /// Entries of `tenant` (every list when `None`) and, if given, of one
    /// address; at most `limit`, newest first.
    pub fn list(&self, tenant: Option<&str>, address: Option<&str>, limit: usize) -> Vec<Listed> {
        let mut out: Vec<Listed> = self
            .map
            .iter()
            .filter_map(|(k, e)| {
                let (t, a) = k.split_once('\n')?;
                let wanted = tenant.is_none_or(|x| x == t) && address.is_none_or(|x| x == a);
                wanted.then(|| Listed {
                    tenant: t.to_string(),
                    address: a.to_string(),
                    entry: e.clone(),
                })
            })
            .collect();
        out.sort_by_key(|e| std::cmp::Reverse(e.entry.time_ms));
        out.truncate(limit);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(op: Op, tenant: &str, address: &str) -> Change {
        Change::new(op, tenant, address, "why", "test", 1).unwrap()
    }

    #[test]
    fn the_global_list_suppresses_for_every_tenant_and_a_tenants_only_for_it() {
        let mut l = Lists::new(10);
        assert_eq!(
            l.apply(&change(Op::Add, "", "Bob@Example.COM")),
            Applied::Added
        );
        assert_eq!(
            l.apply(&change(Op::Add, "acme", "ann@example.com")),
            Applied::Added
        );
        assert_eq!(l.check("anyone", "bob@example.com").unwrap().0, "");
        assert_eq!(l.check("", "bob@example.com").unwrap().0, "");
        assert_eq!(l.check("acme", "ann@example.com").unwrap().0, "acme");
        assert!(l.check("other", "ann@example.com").is_none());
        assert!(l.check("", "ann@example.com").is_none());
        assert_eq!(
            l.apply(&change(Op::Remove, "acme", "ANN@example.com")),
            Applied::Removed
        );
        assert!(l.check("acme", "ann@example.com").is_none());
        assert_eq!(
            l.apply(&change(Op::Remove, "acme", "ann@example.com")),
            Applied::Absent
        );
    }

    #[test]
    fn a_full_list_refuses_new_entries_but_renews_old_ones() {
        let mut l = Lists::new(1);
        assert_eq!(l.apply(&change(Op::Add, "", "a@x.org")), Applied::Added);
        assert_eq!(l.apply(&change(Op::Add, "", "b@x.org")), Applied::Full);
        assert_eq!(l.apply(&change(Op::Add, "", "a@x.org")), Applied::Renewed);
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn addresses_are_checked_and_normalized() {
        assert_eq!(normalize(" <Bob@Example.com> ").unwrap(), "bob@example.com");
        for bad in ["", "bob", "@x.org", "bob@", "a b@x.org", "a@x.org, c@y.org"] {
            assert!(normalize(bad).is_err(), "{bad:?}");
        }
        assert!(normalize(&format!("{}@x.org", "a".repeat(250))).is_err());
        // 254 bytes as given, 378 lowercased.
        assert!(normalize(&format!("{}@x.org", "Ⱥ".repeat(124))).is_err());
        let c = Change::new(Op::Add, "", "a@x.org", &"é".repeat(600), "t", 0).unwrap();
        assert!(c.reason.len() <= REASON_BYTES_MAX);
    }

    #[test]
    fn listing_filters_by_tenant_and_address_newest_first() {
        let mut l = Lists::new(10);
        for (i, a) in ["a@x.org", "b@x.org", "c@x.org"].iter().enumerate() {
            let mut c = change(Op::Add, if i == 1 { "acme" } else { "" }, a);
            c.time_ms = i as u64;
            l.apply(&c);
        }
        let all = l.list(None, None, 10);
        assert_eq!(
            all.iter().map(|e| e.address.as_str()).collect::<Vec<_>>(),
            ["c@x.org", "b@x.org", "a@x.org"]
        );
        assert_eq!(l.list(Some("acme"), None, 10).len(), 1);
        assert_eq!(l.list(None, Some("a@x.org"), 10).len(), 1);
        assert_eq!(l.list(None, None, 2).len(), 2);
    }
}
