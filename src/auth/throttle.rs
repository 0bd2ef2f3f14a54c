//! The failed-login throttle, per account and client IP: at most
//! `max_failures` failed logins of one user name from one IP in a window
//! that opens at the first failure. Past that, the pair is slowed, not
//! locked: one attempt per `window / max_failures` is still verified (an
//! attempt waits for its turn when one is due within that spacing, and is
//! refused with 429 otherwise), a wrong password is answered 429, and the
//! right one gets through. So a guesser keeps the rate of the limit, while
//! a caller who shares an IP with it (a NAT, a proxy) is never locked out:
//! other accounts are not affected at all, and the guessed account's own
//! password passes with a delay of at most one spacing.
//!
//! A success does not clear the count: a caller who knows one password
//! could otherwise reset it between guesses at another. Memory is bounded:
//! at most `capacity` pairs are tracked, the expired ones are pruned when
//! the table is full, then the oldest.
//!
//! `governor` was considered: its keyed limiters count every attempt and
//! cannot look before they consume, while this throttle counts failures
//! only and decides before the password is verified.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Who is throttled: a user name as sent, from one client IP.
pub(crate) type Key = (String, IpAddr);

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    first: Instant,
    /// When the next slowed attempt may be verified.
    next_slot: Instant,
}

/// What to do with an attempt, decided before its password is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Verify now.
    Go,
    /// The pair is slowed: wait this long, then verify; a wrong password is
    /// then answered 429.
    Slowed(Duration),
    /// The pair is slowed and its next turn is taken: 429 at once, retry
    /// after this long.
    Refuse(Duration),
}

#[derive(Debug)]
pub(crate) struct Throttle {
    max_failures: u32,
    window: Duration,
    spacing: Duration,
    capacity: usize,
    clients: HashMap<Key, Failures>,
}

impl Throttle {
    pub(crate) fn new(max_failures: u32, window: Duration, capacity: usize) -> Self {
        let max_failures = max_failures.max(1);
        Throttle {
            max_failures,
            window,
            spacing: window / max_failures,
            capacity: capacity.max(1),
            clients: HashMap::new(),
        }
    }

    /// Decides on one attempt of `key`; a `Slowed` verdict takes the turn.
    pub(crate) fn check(&mut self, key: &Key, now: Instant) -> Verdict {
        let Some(f) = self.clients.get_mut(key) else {
            return Verdict::Go;
        };
        if now >= f.first + self.window {
            self.clients.remove(key);
            return Verdict::Go;
        }
        if f.count < self.max_failures {
            return Verdict::Go;
        }
        let slot = f.next_slot.max(now);
        let wait = slot - now;
        if wait > self.spacing {
            return Verdict::Refuse(wait - self.spacing);
        }
        f.next_slot = slot + self.spacing;
        Verdict::Slowed(wait)
    }

    /// How long until `key`'s next turn (for a Retry-After).
    pub(crate) fn retry_after(&self, key: &Key, now: Instant) -> Duration {
        self.clients.get(key).map_or(Duration::ZERO, |f| {
            f.next_slot.saturating_duration_since(now)
        })
    }

    /// Counts one failed login of `key`.
    pub(crate) fn record_failure(&mut self, key: &Key, now: Instant) {
        let window = self.window;
        let fresh = Failures {
            count: 0,
            first: now,
            next_slot: now,
        };
        let entry = self.clients.entry(key.clone()).or_insert(fresh);
        if now >= entry.first + window {
            *entry = fresh;
        }
        entry.count = entry.count.saturating_add(1);
        if entry.count == self.max_failures {
            entry.next_slot = now;
        }
        if self.clients.len() > self.capacity {
            self.clients.retain(|_, f| now < f.first + window);
        }
        while self.clients.len() > self.capacity {
            let oldest = self
                .clients
                .iter()
                .filter(|(k, _)| *k != key)
                .min_by_key(|(_, f)| f.first)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    self.clients.remove(&k);
                }
                None => break,
            }
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.clients.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(user: &str, n: u8) -> Key {
        (user.to_string(), IpAddr::from([10, 0, 0, n]))
    }

    #[test]
    fn past_the_limit_a_pair_is_slowed_to_one_attempt_per_spacing() {
        let mut t = Throttle::new(5, Duration::from_secs(60), 100);
        let start = Instant::now();
        let admin = key("admin", 1);
        for i in 0..5 {
            assert_eq!(t.check(&admin, start), Verdict::Go, "attempt {i}");
            t.record_failure(&admin, start + Duration::from_secs(i));
        }
        let at = start + Duration::from_secs(10);
        // The next attempt is verified at once; the one after waits its
        // turn (12 s later); a third in that time is refused.
        assert_eq!(t.check(&admin, at), Verdict::Slowed(Duration::ZERO));
        assert_eq!(
            t.check(&admin, at),
            Verdict::Slowed(Duration::from_secs(12))
        );
        assert_eq!(
            t.check(&admin, at),
            Verdict::Refuse(Duration::from_secs(12))
        );
        assert_eq!(t.retry_after(&admin, at), Duration::from_secs(24));
        // Another account from the same IP, and the same account from
        // another IP, are not affected.
        assert_eq!(t.check(&key("alice", 1), at), Verdict::Go);
        assert_eq!(t.check(&key("admin", 2), at), Verdict::Go);
        // The window closes.
        assert_eq!(
            t.check(&admin, start + Duration::from_secs(60)),
            Verdict::Go
        );
        t.record_failure(&admin, start + Duration::from_secs(61));
        assert_eq!(
            t.check(&admin, start + Duration::from_secs(62)),
            Verdict::Go
        );
    }

    #[test]
    fn memory_is_bounded() {
        let mut t = Throttle::new(5, Duration::from_secs(60), 3);
        let start = Instant::now();
        for n in 0..10u8 {
            t.record_failure(&key("u", n), start + Duration::from_millis(u64::from(n)));
        }
        assert_eq!(t.tracked(), 3);
        // The newest are kept.
        for _ in 0..5 {
            t.record_failure(&key("u", 9), start + Duration::from_secs(1));
        }
        assert!(matches!(
            t.check(&key("u", 9), start + Duration::from_secs(2)),
            Verdict::Slowed(_)
        ));
    }
}
