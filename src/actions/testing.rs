//! Test actions, so the engine is exercised without agents: `test.noop`,
//! `test.sleep?ms=N`, `test.fail?times=N[&rollback=fail]`, `test.hang` and
//! `test.set?key=K&value=V`.

use super::{Action, ActionError, ActionResult, Registry, Run};
use async_trait::async_trait;
use std::time::Duration;

pub fn register(r: &mut Registry) {
    r.register("test.noop", Noop);
    r.register("test.sleep", Sleep);
    r.register("test.fail", Fail);
    r.register("test.hang", Hang);
    r.register("test.set", Set);
}

fn param_num(run: &Run, key: &str, default: u64) -> Result<u64, ActionError> {
    match run.params.get(key) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| ActionError::failed(format!("parameter {key}={v:?} is not a number"))),
    }
}

/// Succeeds at once.
pub struct Noop;

#[async_trait]
impl Action for Noop {
    async fn execute(&self, _run: &mut Run) -> ActionResult {
        Ok(())
    }

    async fn rollback(&self, _run: &mut Run) -> ActionResult {
        Ok(())
    }
}

/// Sleeps `ms` milliseconds (default 100), stopping early when cancelled.
pub struct Sleep;

#[async_trait]
impl Action for Sleep {
    async fn execute(&self, run: &mut Run) -> ActionResult {
        let ms = param_num(run, "ms", 100)?;
        run.log(format!("sleeping {ms} ms")).await;
        run.sleep(Duration::from_millis(ms)).await
    }
}

/// Fails while run_time <= `times` (default: always); its rollback fails
/// when `rollback=fail`.
pub struct Fail;

#[async_trait]
impl Action for Fail {
    async fn execute(&self, run: &mut Run) -> ActionResult {
        let times = param_num(run, "times", u64::MAX)?;
        if (run.run_time as u64) <= times {
            run.log(format!("failing run {} of {times}", run.run_time))
                .await;
            Err(ActionError::failed(format!(
                "injected failure on run {}",
                run.run_time
            )))
        } else {
            run.log("succeeding").await;
            Ok(())
        }
    }

    async fn rollback(&self, run: &mut Run) -> ActionResult {
        if run.params.get("rollback").map(String::as_str) == Some("fail") {
            run.log("failing rollback").await;
            Err(ActionError::failed("injected rollback failure"))
        } else {
            run.log("rolled back").await;
            Ok(())
        }
    }
}

/// Waits until cancelled (or timed out).
pub struct Hang;

#[async_trait]
impl Action for Hang {
    async fn execute(&self, run: &mut Run) -> ActionResult {
        run.log("hanging until cancelled").await;
        run.cancel.cancelled().await;
        Err(ActionError::Cancelled)
    }
}

/// Adds `key` = `value` to the context for the downstreams.
pub struct Set;

#[async_trait]
impl Action for Set {
    async fn execute(&self, run: &mut Run) -> ActionResult {
        let key = run
            .params
            .get("key")
            .cloned()
            .ok_or_else(|| ActionError::failed("test.set needs key="))?;
        let value = run.params.get("value").cloned().unwrap_or_default();
        run.context.set(key, value);
        Ok(())
    }
}
