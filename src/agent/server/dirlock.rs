//! The exclusive lock (std's `File::try_lock`, an `flock`) on a state
//! directory that keeps two agents from sharing it.

use super::{Error, Result, LOCK_FILE};
use std::path::Path;
use std::time::Duration;

/// Holds an exclusive `flock` on the state directory's lock file while
/// alive, so two agents never share one state directory.
pub(super) struct DirLock {
    pub(super) _file: std::fs::File,
}

/// How long a busy lock is retried before the directory counts as in use:
/// a child being spawned by another thread of this process holds a copy of
/// the lock's descriptor from fork until exec, so a lock just released by an
/// agent in this process may look held for a moment.
pub(super) const LOCK_WAIT: Duration = Duration::from_secs(2);

impl DirLock {
    /// Takes the lock, retrying a busy one for up to [`LOCK_WAIT`].
    pub(super) async fn take_waiting(dir: &Path) -> Result<DirLock> {
        let end = tokio::time::Instant::now() + LOCK_WAIT;
        loop {
            match DirLock::take(dir) {
                Err(Error::Locked { .. }) if tokio::time::Instant::now() < end => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => return other,
            }
        }
    }

    pub(super) fn take(dir: &Path) -> Result<DirLock> {
        let path = dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| Error::StateDir {
                path: path.clone(),
                source,
            })?;
        // std's lock is `flock(LOCK_EX | LOCK_NB)` on Unix.
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked {
                path: dir.to_path_buf(),
            }),
            Err(std::fs::TryLockError::Error(source)) => Err(Error::StateDir { path, source }),
        }
    }
}
