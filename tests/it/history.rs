//! Task history: the list's server and time-range filters and its counting
//! rule, the plans that serve it, retention (whole tasks, never RUNNING,
//! dry run, one process at a time, on a schedule), the rollups behind the
//! DBA views and the read-only role.

use crate::app::TestApp;
use crate::support::engine::{new_task, submit_with, worker};
use crate::support::{wait_for, TestDb};
use serde_json::Value;
use sqlx::Row;
use std::time::Duration;
use taskd::dag::NodeSpec;
use taskd::engine::{history::Pass, HistoryConfig, Maintenance};
use taskd::model::TaskId;
use taskd::store::{self, history::Removed, task::ListFilter, task::SortKey};

const LIST: &str = "/api/v2/tasks/instances";

fn ids(v: &Value) -> Vec<i64> {
    v["contents"]
        .as_array()
        .map(|c| c.iter().filter_map(|t| t["id"].as_i64()).collect())
        .unwrap_or_default()
}

/// A two-step task (a → b) run to its end by a worker; `b` fails when
/// `fail`.
async fn finished_task(db: &TestDb, name: &str, fail: bool) -> TaskId {
    let b = if fail { "test.fail" } else { "test.noop" };
    let id = submit_with(
        db,
        new_task(name),
        vec![
            NodeSpec::new("a", "test.sleep?ms=40", 10),
            NodeSpec::new("b", b, 10).after(&["a"]),
        ],
    )
    .await;
    worker(db).drain().await.expect("drain");
    id
}

/// A task that stays RUNNING (no worker runs it).
async fn running_task(db: &TestDb, name: &str) -> TaskId {
    submit_with(
        db,
        new_task(name),
        vec![
            NodeSpec::new("a", "test.noop", 10),
            NodeSpec::new("b", "test.noop", 10).after(&["a"]),
        ],
    )
    .await
}

/// Moves a task's times `days` into the past (its finish time only when it
/// has one).
async fn age(db: &TestDb, id: TaskId, days: i64) {
    sqlx::query(
        "update task_instance set create_time = create_time - make_interval(days => $2), \
             start_time = start_time - make_interval(days => $2), \
             finish_time = finish_time - make_interval(days => $2) where id = $1",
    )
    .bind(id.0)
    .bind(days as i32)
    .execute(&db.pool)
    .await
    .expect("age the task");
}

fn rfc3339(days_ago: i64, offset_hours: i32) -> String {
    let t = chrono::Utc::now() - chrono::Duration::days(days_ago);
    let tz = chrono::FixedOffset::east_opt(offset_hours * 3600).expect("an offset");
    t.with_timezone(&tz)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
}

#[tokio::test]
async fn the_list_filters_by_server_and_time_ranges_and_refuses_bad_times() {
    let app = TestApp::start().await;
    let db = &app.db;
    let old = finished_task(db, "old", false).await;
    age(db, old, 10).await;
    let mid = finished_task(db, "mid", true).await;
    age(db, mid, 5).await;
    let new = finished_task(db, "new", false).await;
    let run = running_task(db, "running").await;
    age(db, run, 7).await;
    sqlx::query("update task_instance set server_id = 42 where id = any($1)")
        .bind([old.0, run.0])
        .execute(&db.pool)
        .await
        .expect("set a server");
    let enc = |s: String| s.replace('+', "%2B");

    let a = app.get(&format!("{LIST}?serverId=42")).await;
    assert_eq!(ids(a.ok()), [run.0, old.0]);
    let a = app
        .get(&format!("{LIST}?createTimeFrom={}", enc(rfc3339(6, 8))))
        .await;
    assert_eq!(ids(a.ok()), [new.0, mid.0]);
    let a = app
        .get(&format!(
            "{LIST}?createTimeFrom={}&createTimeTo={}",
            enc(rfc3339(8, 0)),
            enc(rfc3339(4, -5))
        ))
        .await;
    assert_eq!(ids(a.ok()), [run.0, mid.0]);
    let a = app
        .get(&format!("{LIST}?createTimeTo={}", enc(rfc3339(9, 2))))
        .await;
    assert_eq!(ids(a.ok()), [old.0]);
    // Finish-time ranges leave RUNNING tasks out.
    let a = app
        .get(&format!("{LIST}?finishTimeTo={}", enc(rfc3339(1, 0))))
        .await;
    assert_eq!(ids(a.ok()), [mid.0, old.0]);
    let a = app
        .get(&format!(
            "{LIST}?finishTimeFrom={}&status=FAILED,SUCCESSFUL",
            enc(rfc3339(6, 0))
        ))
        .await;
    assert_eq!(ids(a.ok()), [new.0, mid.0]);
    // Bounds are inclusive: the exact create time of a task selects it.
    let t = store::task::get(&db.pool, mid)
        .await
        .expect("read")
        .expect("mid");
    let exact = t
        .create_time
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let a = app
        .get(&format!(
            "{LIST}?createTimeFrom={exact}&createTimeTo={exact}"
        ))
        .await;
    assert_eq!(ids(a.ok()), [mid.0]);
    // An offset's `+` sent unencoded arrives as a space and still reads.
    let a = app
        .get(&format!("{LIST}?createTimeFrom={}", rfc3339(6, 8)))
        .await;
    assert_eq!(ids(a.ok()), [new.0, mid.0]);
    // Finish time sorts RUNNING tasks as the latest.
    let a = app.get(&format!("{LIST}?sort=finishTime,desc")).await;
    assert_eq!(ids(a.ok()), [run.0, new.0, mid.0, old.0]);
    let a = app.get(&format!("{LIST}?sort=finishTime,asc")).await;
    assert_eq!(ids(a.ok()), [old.0, mid.0, new.0, run.0]);

    let before = app.get(LIST).await.ok().clone();
    for (q, field) in [
        ("createTimeFrom=yesterday", "createTimeFrom"),
        ("createTimeTo=2026-13-01T00:00:00Z", "createTimeTo"),
        ("finishTimeFrom=2026-12-01", "finishTimeFrom"),
        ("finishTimeTo=1700000000", "finishTimeTo"),
        ("serverId=x", "serverId"),
        (
            "createTimeFrom=2026-12-02T00:00:00Z&createTimeTo=2026-12-01T00:00:00Z",
            "createTimeFrom",
        ),
        (
            "finishTimeFrom=2026-12-01T10:00:00%2B08:00&finishTimeTo=2026-12-01T01:59:59Z",
            "finishTimeFrom",
        ),
    ] {
        let a = app.get(&format!("{LIST}?{q}")).await;
        a.assert_invalid(field);
    }
    assert_eq!(app.get(LIST).await.ok(), &before);
}

/// Inserts `n` settled one-step tasks named `name` in one statement.
async fn bulk_tasks(db: &TestDb, n: i64, name: &str) {
    sqlx::query(
        "insert into task_instance (name, status, operation, creator, context, trace_id, \
             finish_time) \
         select $2, 'SUCCESSFUL', 'EXECUTE', 'bulk', '{}'::jsonb, 'bulk', now() \
         from generate_series(1, $1)",
    )
    .bind(n)
    .bind(name)
    .execute(&db.pool)
    .await
    .expect("bulk insert");
    sqlx::query("analyze task_instance")
        .execute(&db.pool)
        .await
        .expect("analyze");
}

#[tokio::test]
async fn totals_are_exact_up_to_the_bound_then_an_estimate_flagged_as_such() {
    let app = TestApp::start().await;
    let bound = store::task::EXACT_COUNT_BOUND;
    bulk_tasks(&app.db, bound, "many").await;
    bulk_tasks(&app.db, 3, "few").await;

    let a = app.get(&format!("{LIST}?name=few&size=2")).await;
    let page = &a.ok()["page"];
    assert_eq!(page["totalElements"], 3);
    assert_eq!(page["totalPages"], 2);
    assert!(page.get("totalElementsEstimated").is_none(), "{page}");
    // Exactly at the bound: still exact.
    let a = app.get(&format!("{LIST}?name=many")).await;
    let page = &a.ok()["page"];
    assert_eq!(page["totalElements"], bound);
    assert!(page.get("totalElementsEstimated").is_none(), "{page}");
    // Past it: an estimate, never below the bound, and flagged.
    let a = app.get(LIST).await;
    let page = &a.ok()["page"];
    assert_eq!(page["totalElementsEstimated"], true, "{page}");
    let total = page["totalElements"].as_i64().unwrap_or_default();
    assert!(total > bound, "{page}");
    assert_eq!(
        page["totalPages"].as_i64(),
        Some((total + 9) / 10),
        "{page}"
    );
    assert_eq!(ids(a.ok()).len(), 10);
    // A deep page is still served.
    let a = app.get(&format!("{LIST}?page=1000&size=10")).await;
    assert_eq!(ids(a.ok()).len(), 10);
}

/// Index names and sequentially scanned tables in a JSON plan.
fn scans(node: &Value, indexes: &mut Vec<String>, seq: &mut Vec<String>) {
    if let Some(i) = node["Index Name"].as_str() {
        indexes.push(i.to_string());
    }
    if node["Node Type"] == "Seq Scan" {
        seq.push(node["Relation Name"].as_str().unwrap_or("?").to_string());
    }
    for c in node["Plans"].as_array().into_iter().flatten() {
        scans(c, indexes, seq);
    }
}

#[tokio::test]
async fn list_pages_and_counts_are_served_by_indexes() {
    let db = TestDb::new().await;
    taskd::store::bench_history::build_history(&db.pool, 20_000, 0)
        .await
        .expect("build a history");
    let day = |d: i64| Some(chrono::Utc::now() - chrono::Duration::days(d));
    let status = |s: &str| vec![s.parse().expect("a status")];
    let cases: Vec<(&str, ListFilter, SortKey, bool)> = vec![
        ("default", ListFilter::default(), SortKey::Id, true),
        (
            "status",
            ListFilter {
                statuses: status("FAILED"),
                ..Default::default()
            },
            SortKey::Id,
            true,
        ),
        (
            "rare name",
            ListFilter {
                name: Some("no such name".into()),
                ..Default::default()
            },
            SortKey::Id,
            true,
        ),
        (
            "type",
            ListFilter {
                task_type: Some("SCHEDULED".parse().expect("a type")),
                ..Default::default()
            },
            SortKey::Id,
            true,
        ),
        (
            "cluster",
            ListFilter {
                cluster_id: Some(3),
                ..Default::default()
            },
            SortKey::Id,
            true,
        ),
        (
            "host",
            ListFilter {
                host_id: Some(4),
                ..Default::default()
            },
            SortKey::Id,
            true,
        ),
        (
            "server",
            ListFilter {
                server_id: Some(42),
                ..Default::default()
            },
            SortKey::Id,
            true,
        ),
        (
            "creator",
            ListFilter {
                creator: Some("user3".into()),
                ..Default::default()
            },
            SortKey::Id,
            true,
        ),
        (
            "create range",
            ListFilter {
                create_from: day(2),
                create_to: day(1),
                ..Default::default()
            },
            SortKey::CreateTime,
            true,
        ),
        (
            "finish range",
            ListFilter {
                finish_from: day(8),
                finish_to: day(7),
                ..Default::default()
            },
            SortKey::FinishTime,
            false,
        ),
        (
            "old create range by id",
            ListFilter {
                create_from: day(20),
                create_to: day(19),
                ..Default::default()
            },
            SortKey::Id,
            true,
        ),
        (
            "finish range by name",
            ListFilter {
                finish_from: day(3),
                finish_to: day(2),
                ..Default::default()
            },
            SortKey::Name,
            false,
        ),
        (
            "createTime",
            ListFilter::default(),
            SortKey::CreateTime,
            true,
        ),
        (
            "startTime",
            ListFilter::default(),
            SortKey::StartTime,
            false,
        ),
        (
            "finishTime",
            ListFilter::default(),
            SortKey::FinishTime,
            true,
        ),
        ("name", ListFilter::default(), SortKey::Name, false),
        ("status sort", ListFilter::default(), SortKey::Status, true),
    ];
    let mut conn = db.pool.acquire().await.expect("a connection");
    for (label, f, sort, desc) in cases {
        for page in [0, 500] {
            let (plan, count) = store::task::explain_list(&mut conn, &f, sort, desc, page, 10)
                .await
                .expect("explain");
            for (what, p) in [("page", &plan), ("count", &count)] {
                let (mut indexes, mut seq) = (Vec::new(), Vec::new());
                scans(&p[0]["Plan"], &mut indexes, &mut seq);
                assert!(
                    seq.is_empty() && !indexes.is_empty(),
                    "{label} page {page}: the {what} query scans {seq:?}, indexes \
                     {indexes:?}:\n{p:#}"
                );
            }
        }
    }
}

async fn table_counts(db: &TestDb) -> (i64, i64, i64, i64) {
    sqlx::query_as(
        "select (select count(*) from task_instance), (select count(*) from subtask_instance), \
             (select count(*) from subtask_edge), (select count(*) from subtask_log)",
    )
    .fetch_one(&db.pool)
    .await
    .expect("count")
}

/// Subtasks, edges and log lines left of a task.
async fn remains_of(db: &TestDb, id: TaskId) -> (i64, i64, i64, i64) {
    sqlx::query_as(
        "select (select count(*) from task_instance where id = $1), \
             (select count(*) from subtask_instance where task_id = $1), \
             (select count(*) from subtask_edge e join subtask_instance s \
                  on s.id = e.downstream_id where s.task_id = $1), \
             (select count(*) from subtask_log l join subtask_instance s \
                  on s.id = l.subtask_id where s.task_id = $1)",
    )
    .bind(id.0)
    .fetch_one(&db.pool)
    .await
    .expect("count")
}

fn maintenance(db: &TestDb) -> Maintenance {
    Maintenance::new(db.pool.clone(), HistoryConfig::default())
}

const NINETY_DAYS: Duration = Duration::from_secs(90 * 86_400);

#[tokio::test]
async fn prune_removes_whole_old_finished_tasks_never_running_ones_and_dry_run_changes_nothing() {
    let db = TestDb::new().await;
    let ok = finished_task(&db, "old ok", false).await;
    let failed = finished_task(&db, "old failed", true).await;
    let recent = finished_task(&db, "recent", false).await;
    let running = running_task(&db, "old running").await;
    for id in [ok, failed, running] {
        age(&db, id, 100).await;
    }
    let m = maintenance(&db);
    let before = table_counts(&db).await;
    let (ok_parts, failed_parts) = (remains_of(&db, ok).await, remains_of(&db, failed).await);
    assert_eq!(ok_parts.1, 2);
    assert_eq!(ok_parts.2, 1);
    assert!(ok_parts.3 >= 2, "{ok_parts:?}");

    let (_, preview) = m.preview(NINETY_DAYS).await.expect("preview");
    let expect = Removed {
        tasks: 2,
        subtasks: ok_parts.1 + failed_parts.1,
        edges: ok_parts.2 + failed_parts.2,
        logs: ok_parts.3 + failed_parts.3,
    };
    assert_eq!(preview, expect);
    assert_eq!(table_counts(&db).await, before, "a dry run changes nothing");

    let (_, removed) = m.prune_now(NINETY_DAYS).await.expect("prune");
    assert_eq!(removed, expect);
    assert_eq!(remains_of(&db, ok).await, (0, 0, 0, 0));
    assert_eq!(remains_of(&db, failed).await, (0, 0, 0, 0));
    let r = remains_of(&db, running).await;
    assert_eq!((r.0, r.1, r.2), (1, 2, 1), "the RUNNING task is whole");
    assert_eq!(remains_of(&db, recent).await.1, 2);
    let (_, again) = m.prune_now(NINETY_DAYS).await.expect("prune again");
    assert_eq!(again, Removed::default());
}

#[tokio::test]
async fn a_task_being_retried_is_never_pruned_in_part() {
    let db = TestDb::new().await;
    let failed = finished_task(&db, "old failed", true).await;
    age(&db, failed, 100).await;
    let m = maintenance(&db);
    store::history::rollup(&db.pool, 100).await.expect("rollup");
    // A retry in progress holds the task row (user actions lock it first):
    // the prune skips the whole task, subtasks included.
    let mut tx = db.pool.begin().await.expect("begin");
    store::task::lock(&mut tx, failed).await.expect("lock");
    let cutoff = store::history::cutoff(&db.pool, NINETY_DAYS.as_secs_f64())
        .await
        .expect("cutoff");
    let removed = store::history::prune_batch(&db.pool, cutoff, 100)
        .await
        .expect("prune");
    assert_eq!(removed, Removed::default());
    // The retry commits: the task is RUNNING again and stays.
    store::subtask::requeue_failed(&mut tx, failed, None)
        .await
        .expect("requeue");
    store::task::set_state(
        &mut tx,
        failed,
        taskd::model::TaskStatus::Running,
        taskd::model::TaskOperation::Retry,
    )
    .await
    .expect("retry");
    tx.commit().await.expect("commit");
    let (_, removed) = m.prune_now(NINETY_DAYS).await.expect("prune");
    assert_eq!(removed, Removed::default());
    let r = remains_of(&db, failed).await;
    assert_eq!((r.0, r.1, r.2), (1, 2, 1));
}

#[tokio::test]
async fn one_process_at_a_time_runs_the_scheduled_pass() {
    let db = TestDb::new().await;
    let old = finished_task(&db, "old", false).await;
    age(&db, old, 100).await;
    // Another process is in a pass: this one does nothing.
    let mut other = db.pool.acquire().await.expect("a connection");
    assert!(store::history::try_lock(&mut other).await.expect("lock"));
    let m = maintenance(&db);
    assert_eq!(m.run_once().await.expect("pass"), Pass::Busy);
    assert_eq!(remains_of(&db, old).await.0, 1);
    // Its pass ends; the schedule of this one removes the task.
    store::history::unlock(&mut other).await.expect("unlock");
    let cfg = HistoryConfig {
        interval: Duration::from_millis(50),
        ..HistoryConfig::default()
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let pass = tokio::spawn(Maintenance::new(db.pool.clone(), cfg).run(shutdown.clone()));
    wait_for("the scheduled prune", Duration::from_secs(10), || async {
        (remains_of(&db, old).await == (0, 0, 0, 0)).then_some(())
    })
    .await;
    shutdown.cancel();
    pass.await.expect("the pass loop ends");
    // With no retention configured a pass prunes nothing.
    let keep = finished_task(&db, "kept", false).await;
    age(&db, keep, 1000).await;
    let m = Maintenance::new(
        db.pool.clone(),
        HistoryConfig {
            retention: None,
            ..HistoryConfig::default()
        },
    );
    assert!(matches!(
        m.run_once().await.expect("pass"),
        Pass::Done { .. }
    ));
    assert_eq!(remains_of(&db, keep).await.0, 1);
}

#[tokio::test]
async fn the_dba_views_count_tasks_steps_and_failure_reasons() {
    let db = TestDb::new().await;
    finished_task(&db, "t", false).await;
    finished_task(&db, "t", false).await;
    let failed = finished_task(&db, "t", true).await;
    let m = maintenance(&db);
    let Pass::Done { rolled_up, .. } = m.run_once().await.expect("pass") else {
        panic!("the pass was busy");
    };
    assert_eq!(rolled_up, 3);

    // Per step name (a step's rows split by action: b ran test.noop twice
    // and test.fail once).
    let steps = |db: &TestDb| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_as::<_, (String, i64, i64)>(
                "select name, sum(runs)::bigint, sum(failed)::bigint from step_stats_daily \
                 where day = (now() at time zone 'UTC')::date group by name order by name",
            )
            .fetch_all(&pool)
            .await
            .expect("step stats")
        }
    };
    assert_eq!(steps(&db).await, [("a".into(), 3, 0), ("b".into(), 3, 1)]);
    let rate: f64 = sqlx::query_scalar(
        "select failure_rate::float8 from step_stats_daily where name = 'b' \
         and class_name = 'test.fail'",
    )
    .fetch_one(&db.pool)
    .await
    .expect("failure rate");
    assert_eq!(rate, 1.0);
    let a = sqlx::query("select p50_ms, p95_ms, max_ms from step_stats_daily where name = 'a'")
        .fetch_one(&db.pool)
        .await
        .expect("step a");
    // a sleeps 40 ms: its estimated median is within its bucket (±12%) of
    // a duration of at least 40 ms and at most its slowest run.
    let (p50, max) = (a.get::<f64, _>("p50_ms"), a.get::<f64, _>("max_ms"));
    assert!(
        p50 >= 40.0 / 1.13 && p50 <= max * 1.13,
        "p50 {p50} max {max}"
    );
    assert!(a.get::<f64, _>("p95_ms") >= p50);

    let reasons: Vec<(String, String, i64)> = sqlx::query_as(
        "select name, error, failures::bigint from step_failure_reasons order by name",
    )
    .fetch_all(&db.pool)
    .await
    .expect("reasons");
    assert_eq!(reasons.len(), 1);
    assert_eq!(reasons[0].0, "b");
    assert!(reasons[0].1.contains("injected failure"), "{reasons:?}");
    assert_eq!(reasons[0].2, 1);
    let tasks: Vec<(String, i64)> =
        sqlx::query_as("select status, settled from task_stats_daily order by status")
            .fetch_all(&db.pool)
            .await
            .expect("task stats");
    assert_eq!(tasks, [("FAILED".into(), 1), ("SUCCESSFUL".into(), 2)]);

    // Retried, the task fails again: only b ran again, and only b counts
    // again.
    taskd::engine::retry_task(&db.pool, failed)
        .await
        .expect("retry");
    worker(&db).drain().await.expect("drain");
    m.run_once().await.expect("pass");
    assert_eq!(steps(&db).await, [("a".into(), 3, 0), ("b".into(), 4, 2)]);
    let tasks: Vec<(String, i64)> =
        sqlx::query_as("select status, settled from task_stats_daily order by status")
            .fetch_all(&db.pool)
            .await
            .expect("task stats");
    assert_eq!(tasks, [("FAILED".into(), 2), ("SUCCESSFUL".into(), 2)]);
    let durations: Vec<(i64, bool)> = sqlx::query_as(
        "select id, duration > interval '40 milliseconds' from task_duration order by id",
    )
    .fetch_all(&db.pool)
    .await
    .expect("durations");
    assert_eq!(durations.len(), 3);
    assert!(durations.iter().all(|d| d.1), "{durations:?}");
}

#[tokio::test]
async fn the_history_reader_role_reads_history_and_writes_nothing() {
    let db = TestDb::new().await;
    finished_task(&db, "t", true).await;
    maintenance(&db).run_once().await.expect("pass");
    let mut conn = db.pool.acquire().await.expect("a connection");
    let mut tx = sqlx::Connection::begin(&mut *conn).await.expect("begin");
    sqlx::query("set local role taskd_history_reader")
        .execute(&mut *tx)
        .await
        .expect("become the reader");
    for table in [
        "task_instance",
        "subtask_instance",
        "subtask_edge",
        "subtask_log",
        "task_duration",
        "task_stats_daily",
        "step_stats_daily",
        "step_failure_reasons",
        "history_failure_daily",
    ] {
        let n: i64 = sqlx::query_scalar(&format!("select count(*) from {table}"))
            .fetch_one(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("the reader cannot read {table}: {e}"));
        assert!(n > 0, "{table} is empty");
    }
    // Which targets tasks hold is history too (it may be empty here).
    sqlx::query_scalar::<_, i64>("select count(*) from task_target")
        .fetch_one(&mut *tx)
        .await
        .expect("the reader reads task_target");
    for sql in [
        "update task_instance set creator = 'x'",
        "delete from subtask_log",
        "insert into history_step_daily values (current_date, 'x', 'x', 1, 0, 0, 0, '{}')",
        "select count(*) from iam_user",
        "select count(*) from console_session",
    ] {
        sqlx::query("savepoint s")
            .execute(&mut *tx)
            .await
            .expect("savepoint");
        let e = sqlx::query(sql).execute(&mut *tx).await.expect_err(sql);
        let code = e
            .as_database_error()
            .and_then(|d| d.code())
            .unwrap_or_default();
        assert_eq!(code, "42501", "{sql}: {e}");
        sqlx::query("rollback to savepoint s")
            .execute(&mut *tx)
            .await
            .expect("rollback to savepoint");
    }
    let login: bool = sqlx::query_scalar(
        "select rolcanlogin from pg_roles where rolname = 'taskd_history_reader'",
    )
    .fetch_one(&mut *tx)
    .await
    .expect("the role");
    assert!(!login, "the role is NOLOGIN");
}

#[tokio::test]
async fn a_failed_run_shows_its_error_in_the_detail_and_its_log() {
    let app = TestApp::start().await;
    let id = finished_task(&app.db, "fails", true).await;
    let a = app.get(&format!("{LIST}/{id}", id = id.0)).await;
    let subs = a.ok()["subtasks"].as_array().cloned().unwrap_or_default();
    let b = subs.iter().find(|s| s["name"] == "b").expect("step b");
    let error = b["errorMessage"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("injected failure on run 1"), "{b:#}");
    let ok = subs.iter().find(|s| s["name"] == "a").expect("step a");
    assert!(ok.get("errorMessage").is_none(), "{ok:#}");
    let sub = b["id"].as_i64().unwrap_or_default();
    let log = app
        .get(&format!("{LIST}/{}/subtasks/{sub}/log?runTime=1", id.0))
        .await;
    let text = log.ok()["log"].as_str().unwrap_or_default().to_string();
    let last = text.lines().last().unwrap_or_default();
    assert_eq!(last, format!("[ERROR] run 1 failed: {error}"), "{text}");
}

/// Runs `taskd prune` against the test database; its standard output.
async fn taskd_prune(db: &TestDb, args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskd"))
        .arg("prune")
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run taskd prune");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn taskd_prune_dry_run_says_what_it_would_remove_then_prune_removes_it() {
    let db = TestDb::new().await;
    let old = finished_task(&db, "old", false).await;
    age(&db, old, 100).await;
    finished_task(&db, "new", false).await;
    let before = table_counts(&db).await;
    let said = taskd_prune(&db, &["--older-than", "90d", "--dry-run"]).await;
    assert!(
        said.starts_with("would remove 1 tasks, 2 subtasks, 1 edges and "),
        "{said}"
    );
    assert!(said.ends_with("nothing was changed"), "{said}");
    assert_eq!(table_counts(&db).await, before);
    let said = taskd_prune(&db, &["--older-than", "90d"]).await;
    assert!(
        said.starts_with("removed 1 tasks, 2 subtasks, 1 edges and "),
        "{said}"
    );
    assert_eq!(remains_of(&db, old).await, (0, 0, 0, 0));
    assert_eq!(table_counts(&db).await.0, before.0 - 1);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_taskd"))
        .args(["prune", "--older-than", "ninety days"])
        .env("DATABASE_URL", &db.url)
        .output()
        .await
        .expect("run taskd prune");
    assert!(!out.status.success(), "a bad age is refused");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not an age like 90d"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
