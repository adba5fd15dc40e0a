//! Picks the machines a fan-out runs on (`--on SELECTOR`, MCP `ask_machines`): `all`, a comma
//! list of machine names (each resolved as usual), or a glob (`*`, `?`) on hostname or display
//! name, case-insensitive.

use crate::core::resolver::{self, Candidate, ResolveError};

/// The machines `selector` names, in the order given (list) or of `machines` (all, glob),
/// each once. A glob that matches nothing is `NotFound`.
pub(crate) fn select<'a, C: Candidate>(selector: &str, machines: &'a [C]) -> Result<Vec<&'a C>, ResolveError> {
    let selector = selector.trim();
    if selector.eq_ignore_ascii_case("all") {
        return Ok(machines.iter().collect());
    }
    let mut chosen: Vec<&C> = Vec::new();
    for part in selector.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let found =
            if is_glob(part) { glob_matches(part, machines)? } else { vec![resolver::resolve(part, machines)?] };
        for m in found {
            if !chosen.iter().any(|c| c.id() == m.id()) {
                chosen.push(m);
            }
        }
    }
    if chosen.is_empty() {
        return Err(ResolveError::NotFound { query: selector.to_string(), similar: Vec::new() });
    }
    Ok(chosen)
}

fn is_glob(text: &str) -> bool {
    text.contains(['*', '?'])
}

fn glob_matches<'a, C: Candidate>(pattern: &str, machines: &'a [C]) -> Result<Vec<&'a C>, ResolveError> {
    let pattern = pattern.to_lowercase();
    let hit = |name: &str| glob(pattern.as_bytes(), name.to_lowercase().as_bytes());
    let found: Vec<&C> = machines.iter().filter(|m| hit(m.hostname()) || m.display_name().is_some_and(&hit)).collect();
    if found.is_empty() {
        return Err(ResolveError::NotFound { query: pattern, similar: Vec::new() });
    }
    Ok(found)
}

/// Whether `text` matches `pattern` (`*` any run, `?` any one byte), iteratively with one
/// backtrack point: linear in practice, never exponential.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    struct M(&'static str, &'static str, Option<&'static str>);
    impl Candidate for M {
        fn id(&self) -> String {
            self.0.into()
        }
        fn hostname(&self) -> &str {
            self.1
        }
        fn display_name(&self) -> Option<&str> {
            self.2
        }
    }

    fn names(found: Vec<&M>) -> Vec<&str> {
        found.iter().map(|m| m.1).collect()
    }

    #[test]
    fn globs_match_hostnames_and_display_names() {
        assert!(glob(b"web-*", b"web-1"));
        assert!(glob(b"*-db?", b"eu-db2"));
        assert!(!glob(b"web-?", b"web-12"));
        assert!(glob(b"*", b""));
        let fleet = [
            M("aaaa1111", "web-1", None),
            M("bbbb2222", "web-2", Some("Front")),
            M("cccc3333", "db", Some("front-db")),
        ];
        assert_eq!(names(select("web-*", &fleet).unwrap()), ["web-1", "web-2"]);
        assert_eq!(names(select("FRONT*", &fleet).unwrap()), ["web-2", "db"]);
        assert_eq!(names(select("all", &fleet).unwrap()), ["web-1", "web-2", "db"]);
        assert_eq!(names(select("db, web-1,db", &fleet).unwrap()), ["db", "web-1"]);
        assert!(select("nope-*", &fleet).is_err());
        assert!(select("web-1,nope", &fleet).is_err());
    }
}
