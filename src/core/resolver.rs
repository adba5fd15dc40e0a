//! Resolves what a user typed (`vps-audi`, `web 1`, `3f2a`) to one machine.
//!
//! Order (CONTRACT.md): exact UUID, exact hostname, exact display name, then a unique UUID
//! prefix of at least 2 characters; all case-insensitive. Several matches at one step are an
//! error naming the candidates, never a guess.

use thiserror::Error;

/// What the resolver needs to know about a machine.
pub(crate) trait Candidate {
    /// The machine's UUID as text.
    fn id(&self) -> String;
    /// Its hostname.
    fn hostname(&self) -> &str;
    /// Its display name, if one was set.
    fn display_name(&self) -> Option<&str>;
}

/// Why a name did not resolve to exactly one machine.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum ResolveError {
    /// Nothing matched; `similar` lists names that contain the query, to help.
    #[error("no machine matches {query:?}{}", hint(similar, "did you mean"))]
    NotFound { query: String, similar: Vec<String> },
    /// More than one machine matched at the first step that matched at all.
    #[error("{query:?} matches several machines{}: use a longer id prefix or the full id", hint(candidates, ""))]
    Ambiguous { query: String, candidates: Vec<String> },
}

fn hint(names: &[String], lead: &str) -> String {
    if names.is_empty() {
        return if lead.is_empty() { String::new() } else { "; list them with `cmdop connect --list`".into() };
    }
    let sep = if lead.is_empty() { ": " } else { "; " };
    let lead = if lead.is_empty() { String::new() } else { format!("{lead} ") };
    format!("{sep}{lead}{}", names.join(", "))
}

fn describe<C: Candidate>(c: &C) -> String {
    match c.display_name() {
        Some(d) if !d.is_empty() => format!("{} ({d}, {})", c.hostname(), c.id()),
        _ => format!("{} ({})", c.hostname(), c.id()),
    }
}

/// Picks the one machine `query` names, following the contract's order.
pub(crate) fn resolve<'a, C: Candidate>(query: &str, machines: &'a [C]) -> Result<&'a C, ResolveError> {
    let q = query.trim().to_lowercase();
    let steps: [&dyn Fn(&C) -> bool; 4] = [
        &|m| m.id().to_lowercase() == q,
        &|m| m.hostname().to_lowercase() == q,
        &|m| m.display_name().is_some_and(|d| d.to_lowercase() == q),
        &|m| q.len() >= 2 && m.id().to_lowercase().starts_with(&q),
    ];
    for step in steps {
        let found: Vec<&C> = machines.iter().filter(|m| step(m)).collect();
        match found.as_slice() {
            [] => continue,
            [one] => return Ok(one),
            many => {
                return Err(ResolveError::Ambiguous {
                    query: query.to_string(),
                    candidates: many.iter().map(|m| describe(*m)).collect(),
                });
            }
        }
    }
    let similar = machines
        .iter()
        .filter(|m| {
            !q.is_empty()
                && (m.hostname().to_lowercase().contains(&q)
                    || m.display_name().is_some_and(|d| d.to_lowercase().contains(&q)))
        })
        .map(describe)
        .collect();
    Err(ResolveError::NotFound { query: query.to_string(), similar })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct M(&'static str, &'static str, Option<&'static str>);
    impl Candidate for M {
        fn id(&self) -> String {
            self.0.to_string()
        }
        fn hostname(&self) -> &str {
            self.1
        }
        fn display_name(&self) -> Option<&str> {
            self.2
        }
    }

    fn fleet() -> Vec<M> {
        vec![
            M("3f2a0000-0000-4000-8000-000000000001", "vps-audi", Some("Audi VPS")),
            M("3f2b0000-0000-4000-8000-000000000002", "web-1", None),
            M("a1000000-0000-4000-8000-000000000003", "db", Some("web-1")),
            M("b2000000-0000-4000-8000-000000000004", "twin", None),
            M("c3000000-0000-4000-8000-000000000005", "twin", None),
        ]
    }

    #[test]
    fn exact_uuid_wins() {
        let f = fleet();
        assert_eq!(resolve("3F2A0000-0000-4000-8000-000000000001", &f).unwrap().1, "vps-audi");
    }

    #[test]
    fn hostname_beats_display_name() {
        let f = fleet();
        assert_eq!(resolve("web-1", &f).unwrap().1, "web-1");
    }

    #[test]
    fn display_name_case_insensitive() {
        let f = fleet();
        assert_eq!(resolve("audi vps", &f).unwrap().1, "vps-audi");
    }

    #[test]
    fn unique_prefix_of_two_or_more() {
        let f = fleet();
        assert_eq!(resolve("a1", &f).unwrap().1, "db");
        assert!(matches!(resolve("a", &f), Err(ResolveError::NotFound { .. })));
    }

    #[test]
    fn ambiguous_prefix_names_candidates() {
        let f = fleet();
        let err = resolve("3f", &f).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("vps-audi") && text.contains("web-1"), "{text}");
    }

    #[test]
    fn duplicate_hostnames_are_ambiguous() {
        let f = fleet();
        assert!(
            matches!(resolve("twin", &f), Err(ResolveError::Ambiguous { candidates, .. }) if candidates.len() == 2)
        );
    }

    #[test]
    fn not_found_suggests_similar() {
        let f = fleet();
        let err = resolve("aud", &f).unwrap_err();
        assert!(err.to_string().contains("did you mean vps-audi"), "{err}");
    }
}
