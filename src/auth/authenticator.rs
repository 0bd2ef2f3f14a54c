//! The authenticator: turns an `Authorization: Basic` header and the
//! client's IP into a [`Principal`], or refuses.
//!
//! In order: the header is parsed (missing or unreadable: 401, not counted
//! as a failure); the throttle decides on the (user name, client IP) pair:
//! go, wait for a slowed turn, or 429 at once (see [`super::throttle`]); the user is
//! read with its grants (one query, also when the user does not exist); a
//! cached verification is used when it still matches the stored hash;
//! otherwise argon2 verifies the password against the stored hash, or
//! against a fixed dummy hash when there is no such user, so both cases
//! cost the same. A failure counts against the pair and is a 401 with the
//! same message whether the user or the password was wrong; 429 when the
//! pair was slowed.
//!
//! At most as many argon2 checks run at once as there are CPUs (each takes
//! 19 MiB); the rest wait their turn.

use super::cache::CredentialCache;
use super::password;
use super::role::{grants_of_rows, Principal};
use super::throttle::{Throttle, Verdict};
use super::{AuthConfig, Error, Result};
use crate::store::user;
use axum::http::HeaderValue;
use base64::Engine as _;
use sqlx::PgPool;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::Semaphore;

/// The realm of the `WWW-Authenticate` challenge.
pub const REALM: &str = "taskd";

/// Longest `Authorization` header read.
const HEADER_MAX: usize = 4096;

/// A user name and password from a request. `Debug` never shows the
/// password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub name: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// Reads `Basic base64(name:password)` with `headers`' decoder; the
    /// scheme is case-insensitive.
    pub fn from_header(value: &HeaderValue) -> Result<Credentials> {
        use headers::authorization::{Authorization, Basic};
        use headers::Header as _;
        let unreadable =
            |why: &str| Error::Unauthenticated(format!("{why}; send HTTP Basic credentials"));
        if value.len() > HEADER_MAX {
            return Err(unreadable("the Authorization header is too long"));
        }
        let basic = Authorization::<Basic>::decode(&mut std::iter::once(value)).map_err(|_| {
            let scheme = value
                .as_bytes()
                .split(|b| *b == b' ')
                .next()
                .unwrap_or_default();
            if scheme.eq_ignore_ascii_case(b"basic") {
                unreadable("the Basic credentials are not base64 of UTF-8 \"name:password\"")
            } else {
                unreadable("only the Basic scheme is supported")
            }
        })?;
        if basic.username().is_empty() {
            return Err(unreadable("the user name is empty"));
        }
        Ok(Credentials {
            name: basic.username().to_string(),
            password: basic.password().to_string(),
        })
    }

    /// The header value carrying these credentials.
    pub fn to_header(&self) -> String {
        let raw = format!("{}:{}", self.name, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

struct Inner {
    pool: PgPool,
    config: AuthConfig,
    cache: CredentialCache,
    throttle: Mutex<Throttle>,
    hashing: Semaphore,
}

/// Authenticates requests against the users in the database. Cheap to
/// clone; clones share the cache and the throttle.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Authenticator {
    pub fn new(pool: PgPool, config: AuthConfig) -> Self {
        let parallel = std::thread::available_parallelism().map_or(1, |n| n.get());
        Authenticator {
            inner: Arc::new(Inner {
                cache: CredentialCache::new(config.cache_ttl, config.cache_capacity),
                throttle: Mutex::new(Throttle::new(
                    config.max_failures,
                    config.failure_window,
                    config.max_tracked_clients,
                )),
                hashing: Semaphore::new(parallel),
                pool,
                config,
            }),
        }
    }

    pub fn config(&self) -> &AuthConfig {
        &self.inner.config
    }

    /// Authenticates a request from its `Authorization` header and its
    /// client's IP.
    pub async fn authenticate(
        &self,
        authorization: Option<&HeaderValue>,
        client: IpAddr,
    ) -> Result<Principal> {
        let Some(header) = authorization else {
            return Err(Error::Unauthenticated(
                "authentication is required; send HTTP Basic credentials".into(),
            ));
        };
        let creds = Credentials::from_header(header)?;
        self.verify(&creds, client).await
    }

    /// Checks a user name and password for a client.
    pub async fn verify(&self, creds: &Credentials, client: IpAddr) -> Result<Principal> {
        let key = (creds.name.clone(), client);
        let verdict = lock(&self.inner.throttle).check(&key, Instant::now());
        let slowed = match verdict {
            Verdict::Go => false,
            Verdict::Slowed(wait) => {
                tokio::time::sleep(wait).await;
                true
            }
            Verdict::Refuse(retry_after) => {
                tracing::warn!(client = %client, user = %creds.name, "login throttled");
                return Err(Error::Throttled { retry_after });
            }
        };
        // A read: retried on a fresh connection after a connection fault,
        // so a POST is not refused for a connection the pool replaces.
        let row = crate::db::retry(crate::db::Retry::Idempotent, "user lookup", || {
            user::get_by_name(&self.inner.pool, &creds.name)
        })
        .await?;
        if let Some(row) = &row {
            let hit =
                self.inner
                    .cache
                    .hit(&creds.name, &creds.password, row.id, &row.password_hash);
            if hit {
                return principal(row);
            }
        }
        let stored = row.as_ref().map(|r| r.password_hash.clone());
        let valid = {
            let _permit = self
                .inner
                .hashing
                .acquire()
                .await
                .map_err(|e| Error::Hash(e.to_string()))?;
            password::verify_blocking(creds.password.clone(), stored).await?
        };
        match row {
            Some(row) if valid => {
                self.inner
                    .cache
                    .remember(&creds.name, &creds.password, row.id, &row.password_hash);
                principal(&row)
            }
            _ => {
                let mut throttle = lock(&self.inner.throttle);
                let now = Instant::now();
                throttle.record_failure(&key, now);
                if slowed {
                    tracing::warn!(client = %client, user = %creds.name, "login throttled");
                    return Err(Error::Throttled {
                        retry_after: throttle.retry_after(&key, now),
                    });
                }
                tracing::warn!(client = %client, user = %creds.name, "authentication failed");
                Err(Error::Unauthenticated("wrong user name or password".into()))
            }
        }
    }
}

fn principal(row: &user::UserRow) -> Result<Principal> {
    Ok(Principal {
        user_id: row.id,
        name: row.name.clone(),
        grants: grants_of_rows(&row.grants.0)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).expect("a header value")
    }

    #[test]
    fn basic_credentials_are_parsed() {
        let c = Credentials {
            name: "alice".into(),
            password: "pa:ss word".into(),
        };
        let parsed = Credentials::from_header(&header(&c.to_header())).expect("parse");
        assert_eq!(parsed, c, "the password may hold ':' and spaces");
        let lower = c.to_header().replacen("Basic", "basic", 1);
        assert!(Credentials::from_header(&header(&lower)).is_ok());
        for bad in [
            "Bearer abc",
            "Basic",
            "Basic !!!",
            "Basic YWxpY2U=",     // "alice": no colon
            "Basic OnNlY3JldA==", // ":secret": no name
        ] {
            assert!(
                matches!(
                    Credentials::from_header(&header(bad)),
                    Err(Error::Unauthenticated(_))
                ),
                "{bad}"
            );
        }
        assert!(!format!("{c:?}").contains("pa:ss"));
    }
}
