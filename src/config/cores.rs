//! `cores.cpus` / `--cores`: which CPUs run an engine core.

/// How the user named the CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreSpec {
    /// Every online CPU.
    All,
    /// The first N online CPUs.
    Count(usize),
    /// These CPU ids.
    List(Vec<usize>),
}

/// Most cores spate runs on; core indexes fit in a byte of the logs.
pub const CORES_MAX: usize = 256;

impl CoreSpec {
    pub fn parse(s: &str) -> Result<CoreSpec, String> {
        let s = s.trim();
        if s == "all" {
            return Ok(CoreSpec::All);
        }
        if !s.contains([',', '-']) {
            let n: usize = s
                .parse()
                .map_err(|_| format!("{s:?} is not \"all\", a count or a CPU list"))?;
            if n == 0 || n > CORES_MAX {
                return Err(format!("{n} cores: must be 1..={CORES_MAX}"));
            }
            return Ok(CoreSpec::Count(n));
        }
        let mut cpus = Vec::new();
        for part in s.split(',') {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let a: usize = a
                .trim()
                .parse()
                .map_err(|_| format!("{part:?} is not a CPU or range"))?;
            let b: usize = b
                .trim()
                .parse()
                .map_err(|_| format!("{part:?} is not a CPU or range"))?;
            if a > b {
                return Err(format!("{part:?}: range runs backwards"));
            }
            cpus.extend(a..=b);
        }
        cpus.sort_unstable();
        cpus.dedup();
        if cpus.len() > CORES_MAX {
            return Err(format!("{} CPUs: at most {CORES_MAX}", cpus.len()));
        }
        Ok(CoreSpec::List(cpus))
    }

    /// The CPU ids to pin to, given the online CPUs.
    pub fn resolve(&self, online: &[usize]) -> Result<Vec<usize>, String> {
        match self {
            CoreSpec::All => Ok(online.to_vec()),
            CoreSpec::Count(n) if *n <= online.len() => Ok(online[..*n].to_vec()),
            CoreSpec::Count(n) => Err(format!("{n} cores asked for, {} online", online.len())),
            CoreSpec::List(cpus) => match cpus.iter().find(|c| !online.contains(c)) {
                Some(c) => Err(format!("CPU {c} is not online (online: {online:?})")),
                None => Ok(cpus.clone()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(CoreSpec::parse("all"), Ok(CoreSpec::All));
        assert_eq!(CoreSpec::parse("4"), Ok(CoreSpec::Count(4)));
        assert_eq!(CoreSpec::parse("0,2-3"), Ok(CoreSpec::List(vec![0, 2, 3])));
        assert!(CoreSpec::parse("0").is_err());
        assert!(CoreSpec::parse("3-1").is_err());
        assert!(CoreSpec::parse("x").is_err());
    }

    #[test]
    fn resolves_against_online_cpus() {
        let online = [0, 1];
        assert_eq!(CoreSpec::Count(1).resolve(&online), Ok(vec![0]));
        assert!(CoreSpec::Count(3).resolve(&online).is_err());
        assert!(CoreSpec::List(vec![5]).resolve(&online).is_err());
    }
}
