//! Retrying work that failed for its connection, not for what it asked:
//! which sqlx errors are connection faults, whether the work can have
//! committed, and a loop that runs it again on a fresh connection.
//!
//! A connection fault is either clear (PostgreSQL answered the statement
//! with an error saying it is going away: `57P01 admin_shutdown`, `57P02
//! crash_shutdown`, `57P03 cannot_connect_now`, or class `08` connection
//! exception; the statement failed, so nothing of it committed) or unclear
//! (the connection broke without an answer: an I/O error, a protocol error,
//! the connection's worker gone; a COMMIT, or a single statement, may have
//! taken effect before the reply was lost). `PoolTimedOut` is a fault too,
//! but the pool already waited its acquire timeout for it, so it is not
//! waited out again.
//!
//! What is safe to retry is the caller's to say ([`Retry`]): reads and
//! writes a repeat leaves as they are (an operation under an
//! Idempotency-Key, setting a status to a value) retry on every fault; any
//! other write only on a clear one.

use std::future::Future;
use std::time::{Duration, Instant};

/// How a connection fault left the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// PostgreSQL refused the statement: nothing of it committed.
    NotCommitted,
    /// The connection broke without an answer: a commit may have landed.
    Unclear,
    /// No connection came within the pool's acquire timeout.
    NoConnection,
}

/// The connection fault `e` is, if it is one.
pub fn fault_of(e: &sqlx::Error) -> Option<Fault> {
    match e {
        sqlx::Error::Database(d) => {
            let code = d.code()?;
            (code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03"))
                .then_some(Fault::NotCommitted)
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => Some(Fault::Unclear),
        sqlx::Error::PoolTimedOut => Some(Fault::NoConnection),
        _ => None,
    }
}

/// An error that may wrap a sqlx error (each layer's error type).
pub trait DbFault {
    /// The sqlx error inside, if any.
    fn sqlx_error(&self) -> Option<&sqlx::Error>;

    /// The connection fault this error is, if it is one.
    fn fault(&self) -> Option<Fault> {
        self.sqlx_error().and_then(fault_of)
    }
}

impl DbFault for sqlx::Error {
    fn sqlx_error(&self) -> Option<&sqlx::Error> {
        Some(self)
    }
}

impl DbFault for super::Error {
    fn sqlx_error(&self) -> Option<&sqlx::Error> {
        match self {
            super::Error::Sqlx(e) => Some(e),
            _ => None,
        }
    }
}

/// What a repeat of the work would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// A read, or a write whose repeat changes nothing more (an upsert, a
    /// status set to a value, an operation under an Idempotency-Key):
    /// retried after any fault.
    Idempotent,
    /// Any other write: retried only when it cannot have committed.
    NotCommitted,
}

impl Retry {
    fn allows(self, f: Fault) -> bool {
        match f {
            Fault::NoConnection => false,
            Fault::NotCommitted => true,
            Fault::Unclear => self == Retry::Idempotent,
        }
    }
}

/// How long the retries of one piece of work may go on (an attempt started
/// within it may take the pool's acquire timeout more): an outage shorter
/// than this is waited out, a longer one answers its fault.
pub const RETRY_FOR: Duration = Duration::from_secs(10);

/// Runs `op` until it succeeds, fails for something other than a fault
/// `policy` allows retrying, or [`RETRY_FOR`] has passed; each retry draws
/// a fresh connection from the pool (the pool pings before it hands one
/// out), after a short backoff (25 ms doubling to 1 s).
pub async fn retry<T, E, F, Fut>(policy: Retry, what: &str, mut op: F) -> Result<T, E>
where
    E: DbFault + std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let mut backoff = Duration::from_millis(25);
    let mut attempt = 1u32;
    loop {
        match op().await {
            Ok(v) => {
                if attempt > 1 {
                    tracing::info!(what, attempt, "succeeded on a fresh connection");
                }
                return Ok(v);
            }
            Err(e) => {
                let again = e.fault().is_some_and(|f| policy.allows(f))
                    && started.elapsed() + backoff < RETRY_FOR;
                if !again {
                    return Err(e);
                }
                tracing::warn!(what, attempt, error = %e, "connection fault; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn io() -> sqlx::Error {
        sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
    }

    #[test]
    fn faults_are_classified() {
        assert_eq!(fault_of(&io()), Some(Fault::Unclear));
        assert_eq!(
            fault_of(&sqlx::Error::PoolTimedOut),
            Some(Fault::NoConnection)
        );
        assert_eq!(fault_of(&sqlx::Error::RowNotFound), None);
        assert!(Retry::Idempotent.allows(Fault::Unclear));
        assert!(!Retry::NotCommitted.allows(Fault::Unclear));
        assert!(Retry::NotCommitted.allows(Fault::NotCommitted));
        assert!(!Retry::Idempotent.allows(Fault::NoConnection));
    }

    #[tokio::test]
    async fn an_unclear_fault_is_retried_only_when_a_repeat_is_harmless() {
        let calls = AtomicU32::new(0);
        let op = || async {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(io())
            } else {
                Ok(7)
            }
        };
        assert_eq!(retry(Retry::Idempotent, "t", op).await.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        calls.store(0, Ordering::SeqCst);
        assert!(retry(Retry::NotCommitted, "t", op).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn other_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = retry(Retry::Idempotent, "t", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(sqlx::Error::RowNotFound)
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
