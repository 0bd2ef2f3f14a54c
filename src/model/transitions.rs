//! The state machine, written once: which user actions each state admits,
//! what a failed run turns into, and when a task is settled.

use super::{SubtaskOperation, SubtaskStatus, TaskOperation, TaskStatus};
use std::time::Duration;

/// Why a requested action is not legal in the current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("task state invalid for this operation: task is {status}/{operation}, {wanted}")]
    TaskState {
        status: TaskStatus,
        operation: TaskOperation,
        wanted: &'static str,
    },
    #[error("task prohibits rollback")]
    ProhibitRollback,
    #[error("subtask state invalid for this operation: subtask is {status}, {wanted}")]
    SubtaskState {
        status: SubtaskStatus,
        wanted: &'static str,
    },
    #[error("subtask cannot be skipped: {0}")]
    CannotSkip(&'static str),
}

/// Retry a task: only a FAILED task that is not rolling back.
pub fn check_task_retry(status: TaskStatus, op: TaskOperation) -> Result<(), Refusal> {
    if status == TaskStatus::Failed && op != TaskOperation::Rollback {
        Ok(())
    } else {
        Err(Refusal::TaskState {
            status,
            operation: op,
            wanted: "retry needs a FAILED task that is not rolling back",
        })
    }
}

/// Roll a task back: only a FAILED task whose rollback is not prohibited.
/// A task whose rollback failed may be rolled back again.
pub fn check_task_rollback(
    status: TaskStatus,
    op: TaskOperation,
    prohibited: bool,
) -> Result<(), Refusal> {
    if status != TaskStatus::Failed {
        return Err(Refusal::TaskState {
            status,
            operation: op,
            wanted: "rollback needs a FAILED task",
        });
    }
    if prohibited {
        return Err(Refusal::ProhibitRollback);
    }
    Ok(())
}

/// Retry one subtask: it must be FAILED and its task not rolling back.
pub fn check_subtask_retry(task_op: TaskOperation, status: SubtaskStatus) -> Result<(), Refusal> {
    if status != SubtaskStatus::Failed {
        return Err(Refusal::SubtaskState {
            status,
            wanted: "retry needs a FAILED subtask",
        });
    }
    if task_op == TaskOperation::Rollback {
        return Err(Refusal::SubtaskState {
            status,
            wanted: "retry is refused while the task is rolling back; roll back again instead",
        });
    }
    Ok(())
}

/// Skip one subtask: it must be FAILED. Returns the status and operation it
/// takes: SUCCESSFUL/SKIP, or PENDING/ROLLBACK_SKIP during a rollback.
pub fn skip_outcome(
    task_op: TaskOperation,
    status: SubtaskStatus,
) -> Result<(SubtaskStatus, SubtaskOperation), Refusal> {
    if status != SubtaskStatus::Failed {
        return Err(Refusal::CannotSkip("only a FAILED subtask can be skipped"));
    }
    Ok(if task_op == TaskOperation::Rollback {
        (SubtaskStatus::Pending, SubtaskOperation::RollbackSkip)
    } else {
        (SubtaskStatus::Successful, SubtaskOperation::Skip)
    })
}

/// Cancel one subtask: while it RUNs, or while it waits READY (a retry
/// waiting out its backoff ends cancelled without running again).
pub fn check_subtask_cancel(status: SubtaskStatus) -> Result<(), Refusal> {
    if matches!(status, SubtaskStatus::Running | SubtaskStatus::Ready) {
        Ok(())
    } else {
        Err(Refusal::SubtaskState {
            status,
            wanted: "cancel needs a RUNNING or READY subtask",
        })
    }
}

/// What a failed run becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// READY again with this run_time, after this backoff.
    Retry { run_time: i32, backoff: Duration },
    /// FAILED for good.
    Fail,
}

/// A failed run is retried automatically while run_time <= retry_limit, with
/// exponential backoff from `base`, capped at `cap`. A cancelled run is never
/// retried.
pub fn after_failure(
    run_time: i32,
    retry_limit: i32,
    cancelled: bool,
    base: Duration,
    cap: Duration,
) -> AfterFailure {
    if cancelled || run_time > retry_limit {
        return AfterFailure::Fail;
    }
    let exp = (run_time - 1).clamp(0, 16) as u32;
    let backoff = base.saturating_mul(1 << exp).min(cap);
    AfterFailure::Retry {
        run_time: run_time + 1,
        backoff,
    }
}

/// Counts of a task's subtasks by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    pub pending: i64,
    pub ready: i64,
    pub running: i64,
    pub canceling: i64,
    pub failed: i64,
    pub successful: i64,
}

impl StatusCounts {
    pub fn add(&mut self, status: SubtaskStatus, n: i64) {
        match status {
            SubtaskStatus::Pending => self.pending += n,
            SubtaskStatus::Ready => self.ready += n,
            SubtaskStatus::Running => self.running += n,
            SubtaskStatus::Canceling => self.canceling += n,
            SubtaskStatus::Failed => self.failed += n,
            SubtaskStatus::Successful => self.successful += n,
        }
    }

    pub fn total(&self) -> i64 {
        self.pending + self.ready + self.running + self.canceling + self.failed + self.successful
    }

    /// READY, RUNNING or CANCELING: work that will still finish by itself.
    pub fn active(&self) -> i64 {
        self.ready + self.running + self.canceling
    }
}

/// The status a RUNNING task settles to, if it is done: executing, every
/// subtask SUCCESSFUL; rolling back, every subtask PENDING again; otherwise
/// FAILED once nothing is left that can still run.
pub fn settle(op: TaskOperation, c: StatusCounts) -> Option<TaskStatus> {
    let done = match op {
        TaskOperation::Rollback => c.pending == c.total(),
        TaskOperation::Execute | TaskOperation::Retry => c.successful == c.total(),
    };
    if done {
        Some(TaskStatus::Successful)
    } else if c.active() == 0 && c.failed > 0 {
        Some(TaskStatus::Failed)
    } else {
        None
    }
}

/// Every legal subtask status change, in one place.
pub fn legal(from: SubtaskStatus, to: SubtaskStatus) -> bool {
    use SubtaskStatus::*;
    matches!(
        (from, to),
        (Pending, Ready)          // upstreams done (or rollback turn)
            | (Pending, Failed)   // inputs conflict
            | (Ready, Running)    // claimed
            | (Ready, Failed)     // cancelled before it was claimed
            | (Running, Successful)
            | (Running, Failed)
            | (Running, Ready)    // retried, or handed back at shutdown
            | (Running, Pending)  // rolled back
            | (Running, Canceling)
            | (Canceling, Failed)
            | (Canceling, Successful) // finished before the cancel reached it
            | (Canceling, Pending)    // rollback run finished before the cancel
            | (Failed, Ready)         // retry, or rollback of a failed step
            | (Failed, Successful)    // skip
            | (Failed, Pending)       // skip during rollback
            | (Successful, Ready) // rollback turn
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use SubtaskStatus as S;
    use TaskOperation as Op;
    use TaskStatus as T;

    #[test]
    fn task_retry_only_from_failed_not_rolling_back() {
        assert!(check_task_retry(T::Failed, Op::Execute).is_ok());
        assert!(check_task_retry(T::Failed, Op::Retry).is_ok());
        assert!(check_task_retry(T::Failed, Op::Rollback).is_err());
        assert!(check_task_retry(T::Running, Op::Execute).is_err());
        assert!(check_task_retry(T::Successful, Op::Execute).is_err());
    }

    #[test]
    fn task_rollback_needs_failed_and_permission() {
        assert!(check_task_rollback(T::Failed, Op::Execute, false).is_ok());
        assert!(check_task_rollback(T::Failed, Op::Rollback, false).is_ok());
        assert_eq!(
            check_task_rollback(T::Failed, Op::Execute, true),
            Err(Refusal::ProhibitRollback)
        );
        assert!(check_task_rollback(T::Running, Op::Execute, false).is_err());
        assert!(check_task_rollback(T::Successful, Op::Execute, false).is_err());
    }

    #[test]
    fn subtask_actions_refuse_wrong_states() {
        assert!(check_subtask_retry(Op::Execute, S::Failed).is_ok());
        assert!(check_subtask_retry(Op::Rollback, S::Failed).is_err());
        for s in [
            S::Pending,
            S::Ready,
            S::Running,
            S::Canceling,
            S::Successful,
        ] {
            assert!(check_subtask_retry(Op::Execute, s).is_err());
            assert!(skip_outcome(Op::Execute, s).is_err());
        }
        assert_eq!(
            skip_outcome(Op::Retry, S::Failed),
            Ok((S::Successful, SubtaskOperation::Skip))
        );
        assert_eq!(
            skip_outcome(Op::Rollback, S::Failed),
            Ok((S::Pending, SubtaskOperation::RollbackSkip))
        );
        assert!(check_subtask_cancel(S::Running).is_ok());
        assert!(check_subtask_cancel(S::Ready).is_ok());
        for s in [S::Pending, S::Canceling, S::Failed, S::Successful] {
            assert!(check_subtask_cancel(s).is_err());
        }
    }

    #[test]
    fn failure_retries_while_run_time_within_limit() {
        let b = Duration::from_millis(100);
        let cap = Duration::from_secs(1);
        assert_eq!(
            after_failure(1, 2, false, b, cap),
            AfterFailure::Retry {
                run_time: 2,
                backoff: b
            }
        );
        assert_eq!(
            after_failure(2, 2, false, b, cap),
            AfterFailure::Retry {
                run_time: 3,
                backoff: Duration::from_millis(200)
            }
        );
        assert_eq!(after_failure(3, 2, false, b, cap), AfterFailure::Fail);
        assert_eq!(after_failure(1, 0, false, b, cap), AfterFailure::Fail);
        assert_eq!(after_failure(1, 5, true, b, cap), AfterFailure::Fail);
        match after_failure(9, 20, false, b, cap) {
            AfterFailure::Retry { backoff, .. } => assert_eq!(backoff, cap),
            other => panic!("{other:?}"),
        }
    }

    fn counts(p: i64, r: i64, run: i64, f: i64, s: i64) -> StatusCounts {
        StatusCounts {
            pending: p,
            ready: r,
            running: run,
            canceling: 0,
            failed: f,
            successful: s,
        }
    }

    #[test]
    fn settle_rules() {
        assert_eq!(
            settle(Op::Execute, counts(0, 0, 0, 0, 4)),
            Some(T::Successful)
        );
        assert_eq!(settle(Op::Execute, counts(1, 0, 1, 0, 2)), None);
        assert_eq!(settle(Op::Execute, counts(2, 0, 1, 1, 0)), None);
        assert_eq!(settle(Op::Execute, counts(2, 0, 0, 1, 1)), Some(T::Failed));
        assert_eq!(
            settle(Op::Rollback, counts(4, 0, 0, 0, 0)),
            Some(T::Successful)
        );
        assert_eq!(settle(Op::Rollback, counts(2, 1, 0, 0, 1)), None);
        assert_eq!(settle(Op::Rollback, counts(2, 0, 0, 1, 1)), Some(T::Failed));
    }

    #[test]
    fn legal_transitions() {
        assert!(legal(S::Pending, S::Ready));
        assert!(legal(S::Ready, S::Running));
        assert!(legal(S::Running, S::Canceling));
        assert!(legal(S::Canceling, S::Failed));
        assert!(!legal(S::Successful, S::Failed));
        assert!(!legal(S::Pending, S::Running));
        assert!(!legal(S::Ready, S::Successful));
        assert!(!legal(S::Failed, S::Running));
    }
}
