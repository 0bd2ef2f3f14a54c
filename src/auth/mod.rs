//! Authentication and permissions: users with argon2id passwords in
//! PostgreSQL, HTTP Basic authentication, roles and what they allow, and
//! the first admin.
//!
//! Layout: [`password`] (hashing, the dummy hash, generated passwords),
//! [`role`] (roles, permissions, the principal and its checks), [`users`]
//! (user management, shared by the REST API and the command line),
//! [`authenticator`] (credentials to principal, with the failed-login
//! throttle and the verified-credentials cache), [`middleware`] (the axum
//! middleware, the per-route guard and the extractor). SQL is in
//! `store::user`; the HTTP statuses of [`Error`] are in `http::error`.

pub mod authenticator;
mod cache;
pub mod middleware;
pub mod password;
pub mod role;
mod throttle;
pub mod users;

pub use authenticator::{Authenticator, Credentials, REALM};
pub use middleware::{authenticate, RequireExt};
pub use password::generate_password;
pub use role::{Permission, Principal, Role, RoleGrant};
pub use users::{ensure_admin, NewUser, User};

use crate::store;
use std::time::Duration;

/// Everything authentication and user management can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No credentials, unreadable ones, an unknown user or a wrong
    /// password (HTTP 401).
    #[error("{0}")]
    Unauthenticated(String),
    /// Authenticated, but no role allows it (HTTP 403).
    #[error("{0}")]
    Forbidden(String),
    /// Too many failed logins from this client (HTTP 429).
    #[error("too many failed logins from this client; retry in {} s", retry_after_secs(*.retry_after))]
    Throttled { retry_after: Duration },
    /// A field of a user or role request is invalid (`field` as the REST
    /// API names it).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("user {0:?} already exists")]
    UserExists(String),
    /// What is missing, e.g. `user 5` or `user "bob"`.
    #[error("{0} does not exist")]
    UserNotFound(String),
    /// The change would leave the service without an ADMIN.
    #[error("{0}")]
    Conflict(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error(transparent)]
    Store(#[from] store::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Store(e.into())
    }
}

impl crate::db::DbFault for Error {
    fn sqlx_error(&self) -> Option<&sqlx::Error> {
        match self {
            Error::Store(e) => crate::db::DbFault::sqlx_error(e),
            _ => None,
        }
    }
}

/// Whole seconds to wait, rounded up, at least 1 (a `Retry-After` value).
pub fn retry_after_secs(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

/// How authentication behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// `/metrics` needs an authenticated user (any role).
    pub metrics_auth: bool,
    /// How long a verified user name and password are remembered; zero
    /// verifies every request with argon2.
    pub cache_ttl: Duration,
    /// Most verified credentials remembered.
    pub cache_capacity: usize,
    /// Failed logins of one user name from one client IP in
    /// `failure_window` before that pair is slowed to one verified attempt
    /// per `failure_window / max_failures` (wrong passwords then get 429).
    pub max_failures: u32,
    /// The window, opened by a client's first failed login.
    pub failure_window: Duration,
    /// Most (user name, client IP) pairs tracked by the throttle.
    pub max_tracked_clients: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            metrics_auth: false,
            cache_ttl: Duration::from_secs(60),
            cache_capacity: 1024,
            max_failures: 5,
            failure_window: Duration::from_secs(60),
            max_tracked_clients: 10_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(50)), 50);
    }
}
