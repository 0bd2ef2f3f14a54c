//! The verified-credentials cache: argon2 costs tens of milliseconds per
//! request, so a successful check is remembered for a short time.
//!
//! An entry is keyed by SHA-256(process salt ‖ name ‖ 0 ‖ password) (the
//! password itself is never kept; the random per-process salt makes the
//! digests useless outside this process) and holds the user id and the
//! stored hash it was verified against. A hit needs the same user id and
//! the same stored hash as the database has now, so a deleted user, a
//! re-created one or a changed password misses at once, on every replica;
//! roles are read from the database on every request and are never cached.
//! Entries live `ttl` (0 disables the cache); at most `capacity` are kept.

use argon2::password_hash::rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::{Duration, Instant};

type Key = [u8; 32];

#[derive(Debug)]
struct Entry {
    user_id: i64,
    stored_hash: String,
    expires: Instant,
}

#[derive(Debug)]
pub(crate) struct CredentialCache {
    ttl: Duration,
    capacity: usize,
    salt: [u8; 32],
    entries: HashMap<Key, Entry>,
}

impl CredentialCache {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        let mut salt = [0u8; 32];
        OsRng.fill_bytes(&mut salt);
        CredentialCache {
            ttl,
            capacity: capacity.max(1),
            salt,
            entries: HashMap::new(),
        }
    }

    fn key(&self, name: &str, password: &str) -> Key {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(name.as_bytes());
        h.update([0u8]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// True when `name` and `password` were verified against `stored_hash`
    /// of user `user_id` less than `ttl` ago.
    pub(crate) fn hit(
        &mut self,
        name: &str,
        password: &str,
        user_id: i64,
        stored_hash: &str,
        now: Instant,
    ) -> bool {
        if self.ttl.is_zero() {
            return false;
        }
        let key = self.key(name, password);
        match self.entries.get(&key) {
            Some(e) if e.expires > now => e.user_id == user_id && e.stored_hash == stored_hash,
            Some(_) => {
                self.entries.remove(&key);
                false
            }
            None => false,
        }
    }

    /// Remembers a successful verification.
    pub(crate) fn remember(
        &mut self,
        name: &str,
        password: &str,
        user_id: i64,
        stored_hash: &str,
        now: Instant,
    ) {
        if self.ttl.is_zero() {
            return;
        }
        if self.entries.len() >= self.capacity {
            self.entries.retain(|_, e| e.expires > now);
        }
        while self.entries.len() >= self.capacity {
            let soonest = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.expires)
                .map(|(k, _)| *k);
            match soonest {
                Some(k) => {
                    self.entries.remove(&k);
                }
                None => break,
            }
        }
        let key = self.key(name, password);
        self.entries.insert(
            key,
            Entry {
                user_id,
                stored_hash: stored_hash.to_string(),
                expires: now + self.ttl,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_need_the_same_password_user_and_stored_hash_within_the_ttl() {
        let mut c = CredentialCache::new(Duration::from_secs(60), 10);
        let now = Instant::now();
        c.remember("alice", "pw-one-1", 1, "$h1", now);
        assert!(c.hit("alice", "pw-one-1", 1, "$h1", now));
        assert!(!c.hit("alice", "pw-two-2", 1, "$h1", now));
        assert!(
            !c.hit("alice", "pw-one-1", 2, "$h1", now),
            "re-created user"
        );
        assert!(!c.hit("alice", "pw-one-1", 1, "$h2", now), "new password");
        assert!(!c.hit("bob", "pw-one-1", 1, "$h1", now));
        assert!(!c.hit("alice", "pw-one-1", 1, "$h1", now + Duration::from_secs(60)));
        assert!(c.entries.is_empty(), "the expired entry is dropped");
    }

    #[test]
    fn a_zero_ttl_disables_it_and_capacity_bounds_it() {
        let now = Instant::now();
        let mut off = CredentialCache::new(Duration::ZERO, 10);
        off.remember("alice", "pw", 1, "$h", now);
        assert!(!off.hit("alice", "pw", 1, "$h", now));
        let mut c = CredentialCache::new(Duration::from_secs(60), 2);
        for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
            c.remember(name, "pw", 1, "$h", now + Duration::from_millis(i as u64));
        }
        assert_eq!(c.entries.len(), 2);
        assert!(c.hit("d", "pw", 1, "$h", now));
        assert!(!c.hit("a", "pw", 1, "$h", now));
    }
}
