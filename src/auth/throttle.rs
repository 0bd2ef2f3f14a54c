//! The failed-login throttle: per client IP, at most `max_failures` failed
//! logins in a window that opens at the first failure; past that, every
//! attempt from the IP (right password or not, so that the answer tells an
//! attacker nothing) is refused with 429 until the window closes. Memory is
//! bounded: at most `capacity` IPs are tracked, the expired ones are pruned
//! when the table is full, then the oldest.
//!
//! A success does not clear the count: a caller who knows one password
//! could otherwise reset it between guesses at another.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    first: Instant,
}

#[derive(Debug)]
pub(crate) struct Throttle {
    max_failures: u32,
    window: Duration,
    capacity: usize,
    clients: HashMap<IpAddr, Failures>,
}

impl Throttle {
    pub(crate) fn new(max_failures: u32, window: Duration, capacity: usize) -> Self {
        Throttle {
            max_failures: max_failures.max(1),
            window,
            capacity: capacity.max(1),
            clients: HashMap::new(),
        }
    }

    /// `Err(retry_after)` when `ip` has used up its failures in the current
    /// window.
    pub(crate) fn check(&mut self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let Some(f) = self.clients.get(&ip).copied() else {
            return Ok(());
        };
        let closes = f.first + self.window;
        if now >= closes {
            self.clients.remove(&ip);
            Ok(())
        } else if f.count >= self.max_failures {
            Err(closes - now)
        } else {
            Ok(())
        }
    }

    /// Counts one failed login of `ip`.
    pub(crate) fn record_failure(&mut self, ip: IpAddr, now: Instant) {
        let window = self.window;
        let entry = self.clients.entry(ip).or_insert(Failures {
            count: 0,
            first: now,
        });
        if now >= entry.first + window {
            *entry = Failures {
                count: 0,
                first: now,
            };
        }
        entry.count = entry.count.saturating_add(1);
        if self.clients.len() > self.capacity {
            self.clients.retain(|_, f| now < f.first + window);
        }
        while self.clients.len() > self.capacity {
            let oldest = self
                .clients
                .iter()
                .filter(|(k, _)| **k != ip)
                .min_by_key(|(_, f)| f.first)
                .map(|(k, _)| *k);
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

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn the_sixth_attempt_in_the_window_is_refused_until_it_closes() {
        let mut t = Throttle::new(5, Duration::from_secs(60), 100);
        let start = Instant::now();
        for i in 0..5 {
            assert!(t.check(ip(1), start).is_ok(), "attempt {i}");
            t.record_failure(ip(1), start + Duration::from_secs(i));
        }
        let wait = t
            .check(ip(1), start + Duration::from_secs(10))
            .expect_err("throttled");
        assert_eq!(wait, Duration::from_secs(50));
        // Another client is not affected.
        assert!(t.check(ip(2), start).is_ok());
        // The window closes.
        assert!(t.check(ip(1), start + Duration::from_secs(60)).is_ok());
        t.record_failure(ip(1), start + Duration::from_secs(61));
        assert!(t.check(ip(1), start + Duration::from_secs(62)).is_ok());
    }

    #[test]
    fn memory_is_bounded() {
        let mut t = Throttle::new(5, Duration::from_secs(60), 3);
        let start = Instant::now();
        for n in 0..10u8 {
            t.record_failure(ip(n), start + Duration::from_millis(u64::from(n)));
        }
        assert_eq!(t.tracked(), 3);
        // The newest are kept.
        for _ in 0..5 {
            t.record_failure(ip(9), start + Duration::from_secs(1));
        }
        assert!(t.check(ip(9), start + Duration::from_secs(2)).is_err());
    }
}
