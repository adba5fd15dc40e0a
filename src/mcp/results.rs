//! Output of recent runs kept in memory so a model can page through what did not fit in one
//! tool result (`exec` says `has_more` and gives a `job_id`; `job_output` reads on).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::core::sync::lock;

/// Runs whose output is kept: the 16 newest; older ones are dropped first.
const KEPT_RUNS: usize = 16;

/// One run's full captured output.
#[derive(Debug)]
pub(crate) struct Kept {
    pub stdout: String,
    pub stderr: String,
}

/// The newest runs' output by id; cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Results {
    runs: Arc<Mutex<VecDeque<KeptRun>>>,
}

/// A kept run and its id.
type KeptRun = (String, Arc<Kept>);

impl Results {
    /// Keeps `kept` under a new id, dropping the oldest beyond `KEPT_RUNS`.
    pub fn keep(&self, kept: Kept) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let mut runs = lock(&self.runs);
        if runs.len() == KEPT_RUNS {
            runs.pop_front();
        }
        runs.push_back((id.clone(), Arc::new(kept)));
        id
    }

    /// The run with this id, while it is kept.
    pub fn get(&self, id: &str) -> Option<Arc<Kept>> {
        lock(&self.runs).iter().find(|(k, _)| k == id).map(|(_, v)| v.clone())
    }
}

/// `text[offset..]` cut to at most `max` bytes on character boundaries, and whether more
/// follows.
pub(crate) fn page(text: &str, offset: usize, max: usize) -> (&str, bool) {
    let start = floor_boundary(text, offset.min(text.len()));
    let end = floor_boundary(text, start.saturating_add(max).min(text.len()));
    (&text[start..end], end < text.len())
}

fn floor_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_cut_on_character_boundaries() {
        assert_eq!(page("abcdef", 0, 4), ("abcd", true));
        assert_eq!(page("abcdef", 4, 4), ("ef", false));
        assert_eq!(page("abcdef", 10, 4), ("", false));
        assert_eq!(page("aé", 0, 2), ("a", true));
    }

    #[test]
    fn the_oldest_run_is_dropped_first() {
        let results = Results::default();
        let first = results.keep(Kept { stdout: "1".into(), stderr: String::new() });
        for _ in 0..KEPT_RUNS {
            results.keep(Kept { stdout: String::new(), stderr: String::new() });
        }
        assert!(results.get(&first).is_none());
    }
}
