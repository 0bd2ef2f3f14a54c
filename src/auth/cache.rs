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
//! Entries live `ttl` (0 disables the cache); at most `capacity` are kept,
//! evicted by moka's policy (TinyLFU admission, LRU eviction) instead of a
//! scan of every entry.

use argon2::password_hash::rand_core::{OsRng, RngCore};
use moka::sync::Cache;
use sha2::{Digest, Sha256};
use std::time::Duration;

type Key = [u8; 32];

#[derive(Debug, Clone)]
struct Entry {
    user_id: i64,
    stored_hash: String,
}

/// Safe to share: moka's cache is concurrent, so no lock is held around it.
#[derive(Debug)]
pub(crate) struct CredentialCache {
    salt: [u8; 32],
    /// None when the ttl is 0.
    entries: Option<Cache<Key, Entry>>,
}

impl CredentialCache {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        let mut salt = [0u8; 32];
        OsRng.fill_bytes(&mut salt);
        let entries = (!ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(capacity.max(1) as u64)
                .time_to_live(ttl)
                .build()
        });
        CredentialCache { salt, entries }
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
    pub(crate) fn hit(&self, name: &str, password: &str, user_id: i64, stored_hash: &str) -> bool {
        let Some(entries) = &self.entries else {
            return false;
        };
        entries
            .get(&self.key(name, password))
            .is_some_and(|e| e.user_id == user_id && e.stored_hash == stored_hash)
    }

    /// Remembers a successful verification.
    pub(crate) fn remember(&self, name: &str, password: &str, user_id: i64, stored_hash: &str) {
        if let Some(entries) = &self.entries {
            entries.insert(
                self.key(name, password),
                Entry {
                    user_id,
                    stored_hash: stored_hash.to_string(),
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn hits_need_the_same_password_user_and_stored_hash_within_the_ttl() {
        let c = CredentialCache::new(Duration::from_secs(60), 10);
        c.remember("alice", "pw-one-1", 1, "$h1");
        assert!(c.hit("alice", "pw-one-1", 1, "$h1"));
        assert!(!c.hit("alice", "pw-two-2", 1, "$h1"));
        assert!(!c.hit("alice", "pw-one-1", 2, "$h1"), "re-created user");
        assert!(!c.hit("alice", "pw-one-1", 1, "$h2"), "new password");
        assert!(!c.hit("bob", "pw-one-1", 1, "$h1"));
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let c = CredentialCache::new(Duration::from_millis(50), 10);
        let remembered = Instant::now();
        c.remember("alice", "pw", 1, "$h");
        // Wait on the condition, with a deadline.
        let deadline = remembered + Duration::from_secs(10);
        while c.hit("alice", "pw", 1, "$h") {
            assert!(Instant::now() < deadline, "the entry never expired");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            remembered.elapsed() >= Duration::from_millis(50),
            "not before the ttl"
        );
    }

    #[test]
    fn a_zero_ttl_disables_it_and_capacity_bounds_it() {
        let off = CredentialCache::new(Duration::ZERO, 10);
        off.remember("alice", "pw", 1, "$h");
        assert!(!off.hit("alice", "pw", 1, "$h"));
        let c = CredentialCache::new(Duration::from_secs(60), 2);
        for name in ["a", "b", "c", "d", "e", "f"] {
            c.remember(name, "pw", 1, "$h");
        }
        let entries = c.entries.as_ref().expect("enabled");
        entries.run_pending_tasks();
        assert!(entries.entry_count() <= 2, "{}", entries.entry_count());
    }
}
