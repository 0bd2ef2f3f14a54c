//! One run of one claimed subtask: resolves its action, runs it outside any
//! transaction, bounded by its timeout and stoppable by cancel, and turns
//! what happened into the outcome the finisher writes.

use super::{RunResult, StopReason, Worker};
use crate::actions::{ActionError, Run};
use crate::engine::finish::{Finished, Outcome};
use crate::metrics::METRICS;
use crate::model::SubtaskOperation;
use crate::store::subtask::{Claimed, RunKey};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

impl Worker {
    /// Runs one claimed subtask's action, in a span naming the run: a root
    /// span of the task's trace, whatever the worker was doing.
    pub(super) async fn execute(&self, c: Claimed) -> RunResult {
        let span = tracing::info_span!(
            parent: None,
            "subtask",
            trace_id = %c.trace_id,
            task_id = c.task_id,
            subtask_id = c.id,
            run_time = c.run_time,
            class_name = %c.class_name,
        );
        crate::telemetry::start_in_trace(&span, &c.trace_id);
        let (class_name, started) = (c.class_name.clone(), std::time::Instant::now());
        let result = self.execute_inner(c).instrument(span).await;
        if let RunResult::Write(Finished { outcome, .. }) = &result {
            let secs = started.elapsed().as_secs_f64();
            match outcome {
                Outcome::Succeeded(_) => METRICS.observe_run(&class_name, true, secs),
                Outcome::Failed { .. } => METRICS.observe_run(&class_name, false, secs),
                Outcome::Release | Outcome::Lost { .. } => {}
            }
        }
        result
    }

    /// What the action of `c` is given: the run's identity, its input
    /// context and parameters, and the token that stops it.
    fn run_of(
        &self,
        c: &Claimed,
        params: crate::actions::Params,
        cancel: CancellationToken,
    ) -> Run {
        let timeout = Duration::from_secs(c.timeout_s.max(1) as u64);
        Run {
            task_id: c.task_id,
            subtask_id: c.id,
            run_time: c.run_time,
            operation: c.operation,
            name: c.name.clone(),
            trace_id: c.trace_id.clone(),
            parallel_idx: c.parallel_idx,
            timeout,
            deadline: tokio::time::Instant::now() + timeout,
            params,
            context: c.context.0.clone(),
            cancel,
            deps: self.inner.deps.clone(),
        }
    }

    async fn execute_inner(&self, c: Claimed) -> RunResult {
        let inner = &self.inner;
        let key = RunKey {
            id: c.id,
            run_time: c.run_time,
            executor: inner.id.clone(),
        };
        let finished = |outcome: Outcome| {
            RunResult::Write(Finished {
                run: key.clone(),
                task_id: c.task_id,
                operation: c.operation,
                retry_limit: c.retry_limit,
                class_name: c.class_name.clone(),
                outcome,
            })
        };
        let Some(slot) = self.slot((c.id, c.run_time)) else {
            return RunResult::Abandon((c.id, c.run_time));
        };
        let (action, params) = match inner.registry.resolve(&c.class_name) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "cannot run subtask");
                return finished(Outcome::Failed {
                    error: e.to_string(),
                    cancelled: false,
                });
            }
        };
        slot.fenced.store(
            action.fenced_by_agent(),
            std::sync::atomic::Ordering::Relaxed,
        );
        let mut run = self.run_of(&c, params.clone(), slot.cancel.clone());
        tracing::info!(operation = %c.operation, name = %c.name, "subtask run started");
        let deadline = run.deadline;
        let token = slot.cancel.clone();
        let act = action.clone();
        // The action runs in its own task so that a panic fails the run
        // instead of the worker. The spawned task keeps this run's span, so
        // the action's own lines carry the trace, task, subtask and run_time.
        let handle = tokio::spawn(
            async move {
                let r = if run.operation == SubtaskOperation::Rollback {
                    act.rollback(&mut run).await
                } else {
                    act.execute(&mut run).await
                };
                (r, run)
            }
            .instrument(tracing::Span::current()),
        );
        let abort = handle.abort_handle();
        let mut timed_out = false;
        // Biased, the deadline first: an action that ends because its agent
        // call reached the same deadline is reported as the step's timeout.
        let joined = tokio::select! {
            biased;
            _ = tokio::time::sleep_until(deadline) => { timed_out = true; None }
            j = handle => Some(j),
            _ = token.cancelled() => None,
        };
        let (result, run) = match joined {
            Some(Ok((r, run))) => (r, Some(run)),
            Some(Err(e)) => (
                Err(ActionError::failed(format!("action panicked: {e}"))),
                None,
            ),
            None => {
                // Stop the action: cancel its token, then drop its future.
                token.cancel();
                abort.abort();
                (Err(ActionError::Cancelled), None)
            }
        };
        let outcome = match result {
            Ok(()) => match run {
                Some(run) if run.context != c.context.0 => Outcome::Succeeded(Some(run.context)),
                _ => Outcome::Succeeded(None),
            },
            Err(ActionError::Failed(msg)) => Outcome::Failed {
                error: msg,
                cancelled: false,
            },
            Err(ActionError::Cancelled) => {
                if timed_out {
                    METRICS
                        .timed_out
                        .with_label_values(&[crate::metrics::class_label(&c.class_name)])
                        .inc();
                    Outcome::Failed {
                        error: format!("subtask timed out after {} s", c.timeout_s),
                        cancelled: false,
                    }
                } else {
                    match slot.reason() {
                        Some(StopReason::Shutdown) => Outcome::Release,
                        Some(StopReason::Outage) => {
                            tracing::warn!("run handed back: this worker cannot reach PostgreSQL and nothing else fences it");
                            Outcome::Release
                        }
                        Some(StopReason::LostLease) => {
                            tracing::warn!("run abandoned: this worker lost its heartbeat");
                            return RunResult::Abandon((c.id, c.run_time));
                        }
                        Some(StopReason::UserCancel) | None => Outcome::Failed {
                            error: "subtask canceled".into(),
                            cancelled: true,
                        },
                    }
                }
            }
        };
        if timed_out
            || matches!(
                &outcome,
                Outcome::Failed {
                    cancelled: true,
                    ..
                }
            )
        {
            let cleanup = self.run_of(&c, params, CancellationToken::new());
            action.cancel(&cleanup).await;
        }
        match &outcome {
            Outcome::Succeeded(_) => tracing::info!("subtask run succeeded"),
            Outcome::Failed { error, .. } => tracing::warn!(error = %error, "subtask run failed"),
            Outcome::Release => tracing::info!("subtask run handed back"),
            Outcome::Lost { .. } => {}
        }
        finished(outcome)
    }
}
