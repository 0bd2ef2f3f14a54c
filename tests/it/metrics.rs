//! `/metrics` of a `taskd serve` process of its own (the series are
//! process-wide): every failed run counted, run durations by className and
//! end, the series of registered classNames there at 0 from the start.

use crate::support::engine::{new_task, submit_with};
use crate::support::served::Served;
use crate::support::{wait_for, TestDb};
use std::time::Duration;
use taskd::dag::NodeSpec;
use taskd::model::TaskStatus;

async fn scrape(served: &Served) -> String {
    reqwest::get(served.url("/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The value of the series that `series` (name and labels) names exactly.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} missing from /metrics:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failed_run_is_counted_and_run_durations_are_by_class_and_end() {
    let db = TestDb::new().await;
    let served = Served::start(&db, &[]).await;
    let fail = "class_name=\"test.fail\"";
    let durations = "taskd_subtask_run_duration_seconds_count";

    // Registered classNames have their series before any run.
    let text = scrape(&served).await;
    assert_eq!(
        value(&text, &format!("taskd_subtasks_failed_total{{{fail}}}")),
        0.0
    );
    for status in ["SUCCESSFUL", "FAILED"] {
        let series = format!("{durations}{{class_name=\"test.noop\",status=\"{status}\"}}");
        assert_eq!(value(&text, &series), 0.0);
    }

    // A step that fails three runs (the first and both retries) beside one
    // that succeeds.
    let mut thrice = NodeSpec::new("thrice", "test.fail?times=3", 30);
    thrice.retry_limit = 2;
    let ok = NodeSpec::new("ok", "test.noop", 30);
    let id = submit_with(&db, new_task("fails thrice"), vec![thrice, ok]).await;
    wait_for("the task to fail", Duration::from_secs(60), || async {
        let t = taskd::store::task::get(&db.pool, id).await.ok()??;
        (t.status == TaskStatus::Failed).then_some(())
    })
    .await;

    let text = scrape(&served).await;
    let count = |family: &str| value(&text, &format!("taskd_subtasks_{family}_total{{{fail}}}"));
    assert_eq!(count("failed"), 3.0, "each of the 3 failed runs");
    assert_eq!(count("retried"), 2.0);
    assert_eq!(count("finished"), 3.0);
    assert_eq!(
        value(&text, &format!("{durations}{{{fail},status=\"FAILED\"}}")),
        3.0
    );
    assert_eq!(
        value(
            &text,
            &format!("{durations}{{{fail},status=\"SUCCESSFUL\"}}")
        ),
        0.0
    );
    assert_eq!(
        value(
            &text,
            &format!("{durations}{{class_name=\"test.noop\",status=\"SUCCESSFUL\"}}")
        ),
        1.0
    );
    served.stop().await;
}
