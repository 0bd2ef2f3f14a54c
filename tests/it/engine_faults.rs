//! The engine's answers to the faults of issue 13 that need no network
//! fault: a sweeper's verdict comes from its own watching and is fenced on
//! what it watched, cancel beats retry and hand-back, a bad row never stops
//! a sweep nor a batch, slots are per run, a lost run is claimable at once.

use crate::support::engine::{fast_cfg, submit, worker};
use crate::support::{wait_for, TestDb};
use chrono::{DateTime, Utc};
use std::time::{Duration, Instant};
use taskd::actions::Registry;
use taskd::dag::NodeSpec;
use taskd::engine::{self, EngineConfig, Finished, Outcome, Sweeper, Worker};
use taskd::model::{SubtaskId, SubtaskOperation as SOp, SubtaskStatus as S, TaskId, TaskStatus};
use taskd::store::{self, subtask::RunKey, subtask::SubtaskRow};
use tokio_util::sync::CancellationToken;

async fn row(db: &TestDb, id: i64) -> SubtaskRow {
    store::subtask::get(&db.pool, id).await.unwrap().unwrap()
}

async fn task_status(db: &TestDb, id: TaskId) -> TaskStatus {
    store::task::get(&db.pool, id)
        .await
        .unwrap()
        .unwrap()
        .status
}

async fn heartbeat_of(db: &TestDb, w: &Worker) -> DateTime<Utc> {
    sqlx::query_scalar("select heartbeat_at from worker where id = $1")
        .bind(w.id())
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// Sweeps until a pass recovers something (or `deadline`); returns it.
async fn sweep_until_recovered(s: &Sweeper, deadline: Duration) -> usize {
    let end = Instant::now() + deadline;
    loop {
        let n = s.run_once().await.unwrap();
        if n > 0 || Instant::now() > end {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn with_backoff(backoff: Duration) -> EngineConfig {
    EngineConfig {
        retry_backoff: backoff,
        retry_backoff_cap: backoff,
        ..fast_cfg()
    }
}

#[tokio::test]
async fn stale_heartbeats_after_an_outage_kill_no_one() {
    let db = TestDb::new().await;
    submit(&db, vec![NodeSpec::new("hang", "test.hang", 60).retries(1)]).await;
    let a = worker(&db);
    a.register().await.unwrap();
    let started = a.start().await.unwrap();
    let sub = started.ids[0];
    // What every row looks like when the database comes back from an
    // outage that silenced every process: an old heartbeat.
    sqlx::query("update worker set heartbeat_at = now() - interval '1 hour'")
        .execute(&db.pool)
        .await
        .unwrap();
    let cfg = fast_cfg();
    let sweeper = Sweeper::new(db.pool.clone(), cfg.clone());
    // The worker is back too and heartbeats on: no pass declares it dead.
    let end = Instant::now() + cfg.dead_after * 3;
    while Instant::now() < end {
        assert_eq!(sweeper.run_once().await.unwrap(), 0, "no one died");
        assert!(a.heartbeat().await.unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = row(&db, sub).await;
    assert_eq!((r.status, r.run_time), (S::Running, 1));
    // Once it really stops, the sweeper declares it dead after watching
    // its heartbeat not advance for dead_after, not before.
    let silent = Instant::now();
    assert_eq!(
        sweep_until_recovered(&sweeper, Duration::from_secs(10)).await,
        1
    );
    assert!(silent.elapsed() >= cfg.dead_after, "{:?}", silent.elapsed());
    assert!(
        !a.heartbeat().await.unwrap(),
        "the worker learns it lost its runs"
    );
    assert_eq!(a.finish_started(started).await.unwrap(), vec![false]);
}

#[tokio::test]
async fn the_verdict_is_fenced_on_the_heartbeat_the_sweeper_watched() {
    let db = TestDb::new().await;
    submit(&db, vec![NodeSpec::new("hang", "test.hang", 60).retries(1)]).await;
    let a = worker(&db);
    a.register().await.unwrap();
    let started = a.start().await.unwrap();
    let sub = started.ids[0];
    let sweeper = Sweeper::new(db.pool.clone(), fast_cfg());
    // The sweeper read this heartbeat; the worker heartbeats before the
    // sweeper writes its verdict: the verdict changes nothing.
    let seen = heartbeat_of(&db, &a).await;
    // Heartbeat until the stored value has moved on (two heartbeats within
    // one clock tick would store the same time).
    wait_for(
        "the heartbeat to advance",
        Duration::from_secs(5),
        || async {
            assert!(a.heartbeat().await.unwrap());
            (heartbeat_of(&db, &a).await != seen).then_some(())
        },
    )
    .await;
    assert_eq!(sweeper.recover_worker(a.id(), seen).await.unwrap(), None);
    assert_eq!(row(&db, sub).await.status, S::Running);
    assert!(a.heartbeat().await.unwrap(), "the worker is still alive");
    // A verdict on the heartbeat as it stands lands, and the worker's next
    // heartbeat tells it so.
    let seen = heartbeat_of(&db, &a).await;
    assert_eq!(sweeper.recover_worker(a.id(), seen).await.unwrap(), Some(1));
    let r = row(&db, sub).await;
    assert_eq!((r.status, r.run_time), (S::Ready, 2));
    assert!(!a.heartbeat().await.unwrap());
    assert_eq!(a.finish_started(started).await.unwrap(), vec![false]);
}

#[tokio::test]
async fn a_canceling_run_that_fails_is_never_retried() {
    let db = TestDb::new().await;
    let id = submit(&db, vec![NodeSpec::new("f", "test.fail", 10).retries(3)]).await;
    let w = worker(&db);
    let started = w.start().await.unwrap();
    let sub = started.ids[0];
    // The run fails on its own while the cancel is on its way.
    engine::cancel_subtask(&db.pool, id, SubtaskId(sub))
        .await
        .unwrap();
    assert_eq!(w.finish_started(started).await.unwrap(), vec![true]);
    let r = row(&db, sub).await;
    assert_eq!(
        (r.status, r.operation, r.run_time),
        (S::Failed, SOp::Cancel, 1)
    );
    assert_eq!(task_status(&db, id).await, TaskStatus::Failed);
    assert_eq!(w.drain().await.unwrap(), 0, "nothing runs again");
}

#[tokio::test]
async fn a_ready_subtask_waiting_out_its_backoff_can_be_cancelled() {
    let db = TestDb::new().await;
    let id = submit(&db, vec![NodeSpec::new("f", "test.fail", 10).retries(3)]).await;
    let w = Worker::new(
        db.pool.clone(),
        Registry::standard(),
        with_backoff(Duration::from_secs(60)),
    );
    assert_eq!(w.run_once().await.unwrap(), 1);
    let sub = store::subtask::list_for_task(&db.pool, id).await.unwrap()[0].id;
    let r = row(&db, sub).await;
    assert_eq!(
        (r.status, r.operation, r.run_time),
        (S::Ready, SOp::Retry, 2)
    );
    engine::cancel_subtask(&db.pool, id, SubtaskId(sub))
        .await
        .unwrap();
    let r = row(&db, sub).await;
    assert_eq!(
        (r.status, r.operation, r.run_time),
        (S::Failed, SOp::Cancel, 2)
    );
    assert_eq!(r.error.as_deref(), Some("subtask canceled"));
    assert_eq!(task_status(&db, id).await, TaskStatus::Failed);
}

#[tokio::test]
async fn a_run_lost_with_its_worker_is_claimable_at_once() {
    let db = TestDb::new().await;
    submit(&db, vec![NodeSpec::new("hang", "test.hang", 60).retries(2)]).await;
    let cfg = with_backoff(Duration::from_secs(60));
    let a = Worker::new(db.pool.clone(), Registry::standard(), cfg.clone());
    a.register().await.unwrap();
    let started = a.start().await.unwrap();
    // Its worker is gone (its row removed) without handing the run back.
    sqlx::query("delete from worker")
        .execute(&db.pool)
        .await
        .unwrap();
    let sweeper = Sweeper::new(db.pool.clone(), cfg.clone());
    assert_eq!(sweeper.run_once().await.unwrap(), 1);
    let b = Worker::new(db.pool.clone(), Registry::standard(), cfg);
    // Well within the 60 s backoff (a claim skips a row locked for a
    // moment, e.g. by the old run's log insert, so it may take two tries).
    let again = wait_for(
        "the lost run to be claimed",
        Duration::from_secs(10),
        || async {
            let s = b.start().await.unwrap();
            (!s.ids.is_empty()).then_some(s)
        },
    )
    .await;
    assert_eq!(again.ids, started.ids, "no retry backoff for a lost run");
    assert_eq!(row(&db, started.ids[0]).await.run_time, 2);
}

/// A trigger that makes PostgreSQL refuse every update of `id` that sets
/// one of `statuses`: a row no write can land on.
async fn refuse_writes(db: &TestDb, id: i64, statuses: &str) {
    sqlx::query(&format!(
        "create function refuse() returns trigger language plpgsql as $$ begin \
             if new.id = {id} and new.status in ({statuses}) then \
                 raise exception 'refused by the test'; \
             end if; return new; end $$"
    ))
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "create trigger refuse before update on subtask_instance \
         for each row execute function refuse()",
    )
    .execute(&db.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_sweep_pass_goes_on_past_a_bad_row() {
    let db = TestDb::new().await;
    submit(
        &db,
        vec![
            NodeSpec::new("bad", "test.hang", 60).retries(1),
            NodeSpec::new("good", "test.hang", 60).retries(1),
        ],
    )
    .await;
    let a = worker(&db);
    a.register().await.unwrap();
    let mut ids = a.start().await.unwrap().ids;
    ids.sort();
    refuse_writes(&db, ids[0], "'READY', 'FAILED'").await;
    sqlx::query("delete from worker")
        .execute(&db.pool)
        .await
        .unwrap();
    let sweeper = Sweeper::new(db.pool.clone(), fast_cfg());
    assert_eq!(
        sweeper.run_once().await.unwrap(),
        1,
        "the good row is recovered"
    );
    assert_eq!(row(&db, ids[1]).await.status, S::Ready);
    assert_eq!(row(&db, ids[0]).await.status, S::Running);
}

#[tokio::test]
async fn a_stale_run_never_frees_the_slot_of_a_newer_run_of_its_subtask() {
    let db = TestDb::new().await;
    let id = submit(&db, vec![NodeSpec::new("hang", "test.hang", 60).retries(2)]).await;
    let a = worker(&db);
    a.register().await.unwrap();
    let first = a.start().await.unwrap();
    let sub = first.ids[0];
    // Declared dead while alive: its run is recovered and it learns so.
    sqlx::query("delete from worker")
        .execute(&db.pool)
        .await
        .unwrap();
    let sweeper = Sweeper::new(db.pool.clone(), fast_cfg());
    assert_eq!(sweeper.run_once().await.unwrap(), 1);
    assert!(!a.heartbeat().await.unwrap());
    // It claims run 2 of the same subtask before run 1 has ended.
    let second = a.start().await.unwrap();
    assert_eq!(second.ids, vec![sub]);
    assert_eq!(a.finish_started(first).await.unwrap(), vec![false]);
    // Run 2 still holds its slot: a cancel (found by the heartbeat's
    // polling) reaches it.
    engine::cancel_subtask(&db.pool, id, SubtaskId(sub))
        .await
        .unwrap();
    assert!(a.heartbeat().await.unwrap());
    let done = tokio::time::timeout(Duration::from_secs(10), a.finish_started(second))
        .await
        .expect("run 2 was stopped by its cancel");
    assert_eq!(done.unwrap(), vec![true]);
    let r = row(&db, sub).await;
    assert_eq!(
        (r.status, r.operation, r.run_time),
        (S::Failed, SOp::Cancel, 2)
    );
}

#[tokio::test]
async fn a_canceling_run_left_at_sigterm_ends_cancelled() {
    let db = TestDb::new().await;
    let id = submit(&db, vec![NodeSpec::new("hang", "test.hang", 600)]).await;
    let cfg = EngineConfig {
        // No heartbeat (so no cancel polling) within the test.
        heartbeat_interval: Duration::from_secs(600),
        shutdown_grace: Duration::from_millis(100),
        ..fast_cfg()
    };
    let w = Worker::new(db.pool.clone(), Registry::standard(), cfg);
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(w.run(shutdown.clone()));
    let sub = store::subtask::list_for_task(&db.pool, id).await.unwrap()[0].id;
    wait_for("the run to start", Duration::from_secs(10), || async {
        (row(&db, sub).await.status == S::Running).then_some(())
    })
    .await;
    // A cancel whose notification the worker never got.
    sqlx::query("update subtask_instance set status = 'CANCELING' where id = $1")
        .bind(sub)
        .execute(&db.pool)
        .await
        .unwrap();
    shutdown.cancel();
    handle.await.unwrap().unwrap();
    let r = row(&db, sub).await;
    assert_eq!(
        (r.status, r.operation, r.run_time),
        (S::Failed, SOp::Cancel, 1)
    );
    assert!(r.executor.is_none());
    assert_eq!(task_status(&db, id).await, TaskStatus::Failed);
}

#[tokio::test]
async fn an_error_text_with_a_nul_is_stored_escaped() {
    let db = TestDb::new().await;
    let id = submit(&db, vec![NodeSpec::new("n", "test.noop", 10)]).await;
    let c = store::subtask::claim(&db.pool, "w", 10)
        .await
        .unwrap()
        .remove(0);
    let f = Finished {
        run: RunKey {
            id: c.id,
            run_time: c.run_time,
            executor: "w".into(),
        },
        task_id: c.task_id,
        operation: c.operation,
        retry_limit: c.retry_limit,
        class_name: c.class_name.clone(),
        outcome: Outcome::Failed {
            error: "agent said \0boom".into(),
            cancelled: false,
        },
    };
    let applied = engine::finish_batch(&db.pool, &fast_cfg(), &[f])
        .await
        .unwrap();
    assert_eq!(applied, vec![true]);
    let r = row(&db, c.id).await;
    assert_eq!(r.status, S::Failed);
    assert_eq!(r.error.as_deref(), Some("agent said \\0boom"));
    assert_eq!(task_status(&db, id).await, TaskStatus::Failed);
}

#[tokio::test]
async fn a_run_whose_result_is_refused_never_holds_back_its_batch() {
    let db = TestDb::new().await;
    let mut nodes = vec![NodeSpec::new("poison", "test.sleep?ms=50", 30)];
    for i in 0..8 {
        nodes.push(NodeSpec::new(&format!("n{i}"), "test.sleep?ms=50", 30));
    }
    let id = submit(&db, nodes).await;
    let rows = store::subtask::list_for_task(&db.pool, id).await.unwrap();
    let poison = rows.iter().find(|r| r.name == "poison").unwrap().id;
    refuse_writes(&db, poison, "'SUCCESSFUL'").await;
    let shutdown = CancellationToken::new();
    let w = worker(&db);
    let handle = tokio::spawn(w.run(shutdown.clone()));
    let t0 = Instant::now();
    wait_for("every run written", Duration::from_secs(5), || async {
        let rows = store::subtask::list_for_task(&db.pool, id).await.unwrap();
        rows.iter()
            .all(|r| matches!(r.status, S::Successful | S::Failed))
            .then_some(())
    })
    .await;
    println!("all written {:?} after start", t0.elapsed());
    for r in store::subtask::list_for_task(&db.pool, id).await.unwrap() {
        if r.id == poison {
            assert_eq!(r.status, S::Failed);
            let e = r.error.unwrap();
            assert!(e.contains("could not be stored"), "{e}");
        } else {
            assert_eq!(r.status, S::Successful, "{}", r.name);
        }
    }
    shutdown.cancel();
    handle.await.unwrap().unwrap();
}
