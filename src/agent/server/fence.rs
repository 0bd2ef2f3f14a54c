//! Fencing by attempt: an idempotency key `{subtask}:{run_time}` names one
//! attempt (run) of one subtask. Once the agent has seen run_time n of a
//! subtask, calls of every older run_time of it are refused as superseded,
//! so a worker that lost its run (partitioned, paused) has no further effect
//! on this host. Keys of another shape are not fenced.

use crate::agent::protocol::Fence;
use chrono::Utc;
use std::collections::BTreeMap;

/// Subtasks whose fence is kept; the least recently raised go first (a
/// subtask with this many newer ones on one host has long ended).
pub(super) const MAX_FENCES: usize = 4096;

/// The attempt a key names, if it has the shape `{subtask}:{run_time}`.
pub(super) fn attempt_of(key: &str) -> Option<(&str, u64)> {
    let (subtask, run) = key.rsplit_once(':')?;
    if subtask.is_empty() || run.is_empty() || !run.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((subtask, run.parse().ok()?))
}

/// What the fence says about a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Not an attempt key: no fence applies.
    Unfenced,
    /// The newest attempt seen of its subtask.
    Current,
    /// Newer than any seen: the fence moved up from `from`.
    Raised { from: Option<u64> },
    /// An older attempt: refused.
    Superseded { by: u64 },
}

/// The highest run_time seen per subtask.
#[derive(Debug, Default)]
pub(super) struct Fences {
    by_subtask: BTreeMap<String, Fence>,
}

impl Fences {
    pub(super) fn from_records(records: Vec<Fence>) -> Fences {
        let mut f = Fences::default();
        for r in records {
            f.by_subtask.insert(r.subtask.clone(), r);
        }
        f.trim();
        f
    }

    pub(super) fn records(&self) -> Vec<Fence> {
        let mut v: Vec<Fence> = self.by_subtask.values().cloned().collect();
        v.sort_by_key(|f| f.raised_at);
        v
    }

    /// Checks `key` and raises its subtask's fence when it is newer; counts
    /// a refusal when it is older.
    pub(super) fn admit(&mut self, key: &str) -> Verdict {
        let Some((subtask, run_time)) = attempt_of(key) else {
            return Verdict::Unfenced;
        };
        match self.by_subtask.get_mut(subtask) {
            Some(f) if f.run_time > run_time => {
                f.refused += 1;
                Verdict::Superseded { by: f.run_time }
            }
            Some(f) if f.run_time == run_time => Verdict::Current,
            existing => {
                let from = existing.map(|f| f.run_time);
                self.by_subtask.insert(
                    subtask.to_string(),
                    Fence {
                        subtask: subtask.to_string(),
                        run_time,
                        raised_at: Utc::now(),
                        refused: 0,
                    },
                );
                self.trim();
                Verdict::Raised { from }
            }
        }
    }

    /// Whether `key` is an attempt older than its subtask's fence (counted
    /// as a refusal).
    pub(super) fn refuses(&mut self, key: &str) -> Option<u64> {
        let (subtask, run_time) = attempt_of(key)?;
        let f = self.by_subtask.get_mut(subtask)?;
        (f.run_time > run_time).then(|| {
            f.refused += 1;
            f.run_time
        })
    }

    /// The newest run_time seen of `subtask`.
    pub(super) fn newest(&self, subtask: &str) -> Option<u64> {
        self.by_subtask.get(subtask).map(|f| f.run_time)
    }

    fn trim(&mut self) {
        while self.by_subtask.len() > MAX_FENCES {
            let oldest = self
                .by_subtask
                .values()
                .min_by_key(|f| f.raised_at)
                .map(|f| f.subtask.clone());
            match oldest {
                Some(s) => self.by_subtask.remove(&s),
                None => break,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_attempts_only_in_their_shape() {
        assert_eq!(attempt_of("12:3"), Some(("12", 3)));
        assert_eq!(attempt_of("a:b:7"), Some(("a:b", 7)));
        assert_eq!(attempt_of("12"), None);
        assert_eq!(attempt_of(":3"), None);
        assert_eq!(attempt_of("12:"), None);
        assert_eq!(attempt_of("12:x"), None);
        assert_eq!(attempt_of("12:+3"), None);
    }

    #[test]
    fn a_newer_attempt_supersedes_older_ones_only() {
        let mut f = Fences::default();
        assert_eq!(f.admit("free-form"), Verdict::Unfenced);
        assert_eq!(f.admit("7:1"), Verdict::Raised { from: None });
        assert_eq!(f.admit("7:1"), Verdict::Current);
        assert_eq!(f.admit("8:5"), Verdict::Raised { from: None });
        assert_eq!(f.admit("7:2"), Verdict::Raised { from: Some(1) });
        assert_eq!(f.admit("7:1"), Verdict::Superseded { by: 2 });
        assert_eq!(f.refuses("7:1"), Some(2));
        assert_eq!(f.refuses("7:2"), None);
        assert_eq!(f.refuses("8:5"), None);
        let back = Fences::from_records(f.records());
        let seven = back.records().into_iter().find(|r| r.subtask == "7");
        assert_eq!(seven.map(|r| (r.run_time, r.refused)), Some((2, 2)));
    }
}
