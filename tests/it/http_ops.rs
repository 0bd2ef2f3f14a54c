//! The four operations over real HTTP: what they return (field by field
//! against the seed samples), their guards, Idempotency-Key replays, one task
//! per target under 50 concurrent requests, and a task created over the API
//! running to SUCCESSFUL on a worker.

use crate::app::{Answer, TestApp};
use crate::support::engine::fast_cfg;
use crate::support::wait_for;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;
use taskd::actions::{testing::Noop, Registry};
use taskd::dag::templates::Template;
use taskd::engine::Worker;
use taskd::model::TaskId;
use taskd::store::{self, inventory::AgentStatus};

fn restart_path(cluster: i64, server: i64) -> String {
    format!("/api/v2/ob/clusters/{cluster}/servers/{server}/restart")
}

fn op_path(op: &str, cluster: i64, server: i64) -> String {
    format!("/api/v2/ob/clusters/{cluster}/servers/{server}/{op}")
}

// ---------------------------------------------------------------- seeds

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/seeds/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn obj<'a>(v: &'a Value, what: &str) -> &'a Map<String, Value> {
    v.as_object()
        .unwrap_or_else(|| panic!("{what} is not an object: {v}"))
}

/// Same keys with the same JSON types as the sample; `extra` keys (and only
/// those) may be added.
#[track_caller]
fn assert_same_shape(ours: &Value, sample: &Value, extra: &[&str], what: &str) {
    let (o, s) = (obj(ours, what), obj(sample, what));
    for (k, sv) in s {
        let ov = o
            .get(k)
            .unwrap_or_else(|| panic!("{what}: key {k:?} of the sample is missing: {ours:#}"));
        assert_eq!(
            json_type(ov),
            json_type(sv),
            "{what}.{k}: ours is {ov}, the sample's {sv}"
        );
    }
    for k in o.keys() {
        assert!(
            s.contains_key(k) || extra.contains(&k.as_str()),
            "{what}: key {k:?} is not in the sample"
        );
    }
}

/// Subtasks in execution order (a topological walk from the roots), as
/// (name, upstream names, downstream names, the subtask).
fn dag(subtasks: &Value) -> Vec<(String, BTreeSet<String>, BTreeSet<String>, Value)> {
    let list = subtasks.as_array().cloned().unwrap_or_default();
    let names: HashMap<i64, String> = list
        .iter()
        .map(|s| {
            (
                s["id"].as_i64().unwrap_or_default(),
                s["name"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let named = |ids: &Value| -> BTreeSet<String> {
        ids.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|i| i.as_i64())
                    .map(|i| names[&i].clone())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut order = Vec::new();
    while order.len() < list.len() {
        let before = order.len();
        let mut ready: Vec<&Value> = list
            .iter()
            .filter(|s| {
                let n = s["name"].as_str().unwrap_or_default();
                !done.contains(n) && named(&s["upstreams"]).is_subset(&done)
            })
            .collect();
        ready.sort_by_key(|s| s["name"].as_str().unwrap_or_default().to_string());
        for s in ready {
            let n = s["name"].as_str().unwrap_or_default().to_string();
            order.push((
                n.clone(),
                named(&s["upstreams"]),
                named(&s["downstreams"]),
                s.clone(),
            ));
            done.insert(n);
        }
        assert!(order.len() > before, "the DAG has a cycle: {subtasks:#}");
    }
    order
}

/// Compares one operation's answer with the current-shape reference sample
/// (`reference`) and, for the DAG, with `own` (its own sample; the same as
/// the reference for restart and agent restart).
fn compare_with_seed(a: &Answer, reference: &Value, own: &Value, target_keys: &[&str]) {
    // Envelope: exactly the sample's keys and types.
    assert_same_shape(&a.body, reference, &[], "envelope");
    let (task, ref_task) = (a.data(), &reference["data"]);
    // Task: the sample's keys and types; createTime, prohibitRollback (the
    // issue's field list), the cluster object and the traceId (issue 17)
    // may be added.
    assert_same_shape(
        task,
        ref_task,
        &["createTime", "prohibitRollback", "cluster", "traceId"],
        "task",
    );
    for k in target_keys {
        assert!(task[*k].is_i64(), "task.{k}: {task:#}");
    }
    assert_eq!(task["name"], own["data"]["name"]);
    for k in ["type", "taskDefinitionId", "status", "operation"] {
        assert_eq!(task[k], ref_task[k], "task.{k}");
    }
    assert_eq!(task["executor"].as_str().map(str::is_empty), Some(false));
    if let Some(c) = task.get("cluster") {
        assert_same_shape(
            c,
            &json!({"id": 1, "name": "x", "obClusterId": 1}),
            &[],
            "cluster",
        );
        assert_eq!(c["id"], task["clusterId"]);
    }
    // Context: the sample's shape and keys.
    let (ctx, ref_ctx) = (&task["context"], &ref_task["context"]);
    assert_same_shape(ctx, ref_ctx, &[], "context");
    assert_same_shape(
        &ctx["stringMap"],
        &ref_ctx["stringMap"],
        &[],
        "context.stringMap",
    );
    assert_same_shape(&ctx["listMap"], &ref_ctx["listMap"], &[], "context.listMap");
    assert_eq!(ctx["parallelIdx"], -1);
    assert_eq!(ctx["parallel"], false);

    // Subtasks: each exactly the sample subtask's keys and types (the null
    // executor, startTime and finishTime of unstarted subtasks are omitted,
    // as in the samples).
    let ref_sub = &ref_task["subtasks"][0];
    let subs = task["subtasks"].as_array().cloned().unwrap_or_default();
    for s in &subs {
        assert_same_shape(s, ref_sub, &[], "subtask");
        for k in [
            "nodeType",
            "operation",
            "parallelIdx",
            "prohibitRollback",
            "runTime",
        ] {
            assert_eq!(s[k], ref_sub[k], "subtask.{k}");
        }
    }
    let series: BTreeSet<i64> = subs.iter().filter_map(|s| s["seriesId"].as_i64()).collect();
    assert_eq!(
        series,
        (0..subs.len() as i64).collect(),
        "seriesIds are 0..n"
    );

    // The DAG: names in execution order and every relation, against the
    // operation's own sample.
    let own_list = if own["data"]["subtasks"].is_array() {
        &own["data"]["subtasks"]
    } else {
        &own["data"]["tasks"]
    };
    let ours = dag(&task["subtasks"]);
    let theirs = dag(own_list);
    let names = |d: &[(String, BTreeSet<String>, BTreeSet<String>, Value)]| -> Vec<String> {
        d.iter().map(|(n, ..)| n.clone()).collect()
    };
    assert_eq!(
        names(&ours),
        names(&theirs),
        "subtask names in execution order"
    );
    for ((n, up, down, _), (_, sup, sdown, _)) in ours.iter().zip(&theirs) {
        assert_eq!(up, sup, "upstreams of {n}");
        assert_eq!(down, sdown, "downstreams of {n}");
    }
    // The first subtask may run, the rest wait.
    for (i, (n, _, _, s)) in ours.iter().enumerate() {
        let want = if i == 0 { "READY" } else { "PENDING" };
        assert_eq!(s["status"], want, "status of {n}");
    }
    // classNames and timeouts, where the sample has them (current shape),
    // else from the reference sample for the steps they share.
    let by_name: BTreeMap<String, Value> = dag(&ref_task["subtasks"])
        .into_iter()
        .chain(theirs.clone())
        .map(|(n, _, _, s)| (n, s))
        .collect();
    for (n, _, _, s) in &ours {
        if let Some(r) = by_name.get(n).filter(|r| r.get("className").is_some()) {
            assert_eq!(s["className"], r["className"], "className of {n}");
            assert_eq!(s["timeout"], r["timeout"], "timeout of {n}");
            assert_eq!(s["description"], r["description"], "description of {n}");
        } else {
            assert!(
                s["className"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("com.alipay.ocp.")),
                "{n}"
            );
        }
    }
}

#[tokio::test]
async fn the_four_operations_answer_like_the_seed_samples() {
    let app = TestApp::start().await;
    let restart = fixture("restart-observer.json");
    let agent = fixture("restart-agent.json");
    let start = fixture("start-observer.json");
    let stop = fixture("stop-observer.json");
    // The samples' own inventory: cluster protoss, zone2.
    let host = app.add_host("host-a").await;
    let c = app
        .add_cluster("protoss", &[("zone2", host, "RUNNING")])
        .await;
    let cluster = c["id"].as_i64().unwrap_or_default();
    let running = c["zones"][0]["servers"][0]["id"]
        .as_i64()
        .unwrap_or_default();

    // restart
    let a = app.post(&restart_path(cluster, running)).await;
    a.ok();
    compare_with_seed(&a, &restart, &restart, &["clusterId"]);
    let sm = &a.data()["context"]["stringMap"];
    for k in [
        "cluster_name",
        "ocpagent_service_name",
        "prohibit_rollback",
        "former_cluster_status",
        "target_zone_status",
        "former_zone_status",
        "zone_name",
        "target_cluster_status",
    ] {
        assert_eq!(
            sm[k], restart["data"]["context"]["stringMap"][k],
            "stringMap.{k}"
        );
    }
    assert_eq!(sm["cluster_id"], cluster.to_string());
    assert_eq!(sm["server_id"], running.to_string());
    assert_eq!(
        a.data()["context"]["listMap"]["server_ids"],
        json!([running.to_string()])
    );

    // agent restart (both paths; the second waits for the first to end)
    let a = app
        .post(&format!("/compute/hosts/{host}/agent/restart"))
        .await;
    a.ok();
    compare_with_seed(&a, &agent, &agent, &["hostId"]);
    assert_eq!(a.data()["hostId"], host);
    assert_eq!(
        a.data()["context"]["stringMap"],
        json!({"prohibit_rollback": "false", "host_id": host.to_string()})
    );
    assert_eq!(a.data()["context"]["listMap"], json!({}));

    // start and stop: a cluster of their own so the restart above does not
    // hold the servers.
    let h2 = app.add_host("host-b").await;
    let h3 = app.add_host("host-c").await;
    let c2 = app
        .add_cluster(
            "terran",
            &[("zone2", h2, "STOPPED"), ("zone3", h3, "RUNNING")],
        )
        .await;
    let c2_id = c2["id"].as_i64().unwrap_or_default();
    let s_stopped = c2["zones"][0]["servers"][0]["id"]
        .as_i64()
        .unwrap_or_default();
    let s_running = c2["zones"][1]["servers"][0]["id"]
        .as_i64()
        .unwrap_or_default();
    let a = app.post(&op_path("start", c2_id, s_stopped)).await;
    a.ok();
    compare_with_seed(&a, &restart, &start, &["clusterId"]);
    assert_eq!(
        a.data()["context"]["stringMap"]["former_zone_status"],
        "RUNNING"
    );
    let a = app.post(&op_path("stop", c2_id, s_running)).await;
    a.ok();
    compare_with_seed(&a, &restart, &stop, &["clusterId"]);
    assert_eq!(a.data()["context"]["stringMap"]["zone_name"], "zone3");
}

// ---------------------------------------------------------------- basics

#[tokio::test]
async fn an_operation_returns_its_task_at_once_and_stores_who_and_what() {
    let app = TestApp::start().await;
    let (cluster, server, _) = app.one_server("RUNNING").await;
    let a = app
        .send(
            app.client
                .post(app.url(&restart_path(cluster, server)))
                .header("X-Trace-Id", "op-trace-1"),
        )
        .await;
    let t = a.ok().clone();
    assert_eq!(a.body["traceId"], "op-trace-1");
    assert_eq!(t["status"], "RUNNING");
    assert_eq!(t["creator"], crate::app::ADMIN);
    assert_eq!(t["executor"], app.addr.as_str());
    assert_eq!(t["clusterId"], cluster);
    assert_eq!(
        t["cluster"],
        json!({"id": cluster, "name": "protoss", "obClusterId": 12000001})
    );
    assert_eq!(t["prohibitRollback"], false);
    assert!(t.get("finishTime").is_none() && t.get("hostId").is_none());
    assert!(t["context"]["stringMap"].get("force").is_none());
    let id = t["id"].as_i64().unwrap_or_default();
    let row = store::task::get(&app.db.pool, TaskId(id))
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(row.trace_id, "op-trace-1");
    assert_eq!(
        row.target_key.as_deref(),
        Some(&*format!("server:{server}"))
    );
    assert_eq!(row.server_id, Some(server));
    assert_eq!(row.cluster_id, Some(cluster));
    // GET returns the same task.
    let g = app.get(&format!("/api/v2/tasks/instances/{id}")).await;
    assert_eq!(g.ok(), &t);
}

#[tokio::test]
async fn force_is_in_the_context_only_when_true() {
    let app = TestApp::start().await;
    let host = app.add_host("h").await;
    let h2 = app.add_host("h2").await;
    let c = app
        .add_cluster("c", &[("z1", host, "RUNNING"), ("z2", h2, "RUNNING")])
        .await;
    let cluster = c["id"].as_i64().unwrap_or_default();
    let s1 = c["zones"][0]["servers"][0]["id"]
        .as_i64()
        .unwrap_or_default();
    let s2 = c["zones"][1]["servers"][0]["id"]
        .as_i64()
        .unwrap_or_default();
    let a = app
        .post(&format!("{}?force=true", restart_path(cluster, s1)))
        .await;
    assert_eq!(a.ok()["context"]["stringMap"]["force"], "true");
    let a = app
        .post(&format!("{}?force=false", op_path("stop", cluster, s2)))
        .await;
    assert!(a.ok()["context"]["stringMap"].get("force").is_none());
    app.post(&format!("{}?force=maybe", restart_path(cluster, s1)))
        .await
        .assert_invalid("force");
}

#[tokio::test]
async fn the_agent_restart_answers_on_both_paths() {
    let app = TestApp::start().await;
    let host = app.add_host("h").await;
    let h2 = app.add_host("h2").await;
    let a = app
        .post(&format!("/compute/hosts/{host}/agent/restart"))
        .await;
    assert_eq!(a.ok()["name"], "Restart OCP agent");
    let a = app
        .post(&format!("/api/v2/compute/hosts/{h2}/agent/restart"))
        .await;
    assert_eq!(a.ok()["hostId"], h2);
    // One RUNNING task per host, whichever path asked.
    app.post(&format!("/api/v2/compute/hosts/{host}/agent/restart"))
        .await
        .assert_error(409, "TARGET_BUSY");
    app.post("/compute/hosts/999/agent/restart")
        .await
        .assert_error(404, "HOST_NOT_FOUND");
    app.post("/compute/hosts/x/agent/restart")
        .await
        .assert_invalid("hostId");
}

// ---------------------------------------------------------------- guards

#[tokio::test]
async fn guards_refuse_wrong_targets_and_states_and_create_nothing() {
    let app = TestApp::start().await;
    let h = [
        app.add_host("h1").await,
        app.add_host("h2").await,
        app.add_host("h3").await,
        app.add_host("h4").await,
        app.add_host("h5").await,
    ];
    let c = app
        .add_cluster(
            "protoss",
            &[
                ("z-running", h[0], "RUNNING"),
                ("z-stopped", h[1], "STOPPED"),
                ("z-starting", h[2], "STARTING"),
                ("z-abnormal", h[3], "ABNORMAL"),
            ],
        )
        .await;
    let other = app.add_cluster("zerg", &[("z", h[4], "RUNNING")]).await;
    let cluster = c["id"].as_i64().unwrap_or_default();
    let server = |i: usize| {
        c["zones"][i]["servers"][0]["id"]
            .as_i64()
            .unwrap_or_default()
    };
    let (running, stopped, starting, abnormal) = (server(0), server(1), server(2), server(3));
    let foreign = other["zones"][0]["servers"][0]["id"]
        .as_i64()
        .unwrap_or_default();

    // Targets that do not exist, or not where the path says.
    let a = app.post(&restart_path(cluster, 9999)).await;
    a.assert_error(404, "SERVER_NOT_FOUND");
    assert_eq!(a.error_target(), "serverId");
    let a = app.post(&restart_path(9999, running)).await;
    a.assert_error(404, "CLUSTER_NOT_FOUND");
    assert_eq!(a.error_target(), "id");
    app.post(&restart_path(cluster, foreign))
        .await
        .assert_error(404, "SERVER_NOT_FOUND");
    app.post("/api/v2/ob/clusters/1/servers/abc/restart")
        .await
        .assert_invalid("serverId");
    app.post("/api/v2/ob/clusters/0/servers/1/stop")
        .await
        .assert_invalid("id");
    app.post("/api/v2/ob/clusters/1/servers/99999999999999999999/start")
        .await
        .assert_invalid("serverId");

    // States.
    for (op, server) in [
        ("start", running),
        ("start", starting),
        ("start", abnormal),
        ("stop", stopped),
        ("stop", starting),
        ("stop", abnormal),
        ("restart", starting),
        ("restart", abnormal),
    ] {
        let a = app.post(&op_path(op, cluster, server)).await;
        a.assert_error(400, "SERVER_STATE_INVALID");
        assert!(
            a.body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("needs")),
            "{:#}",
            a.body
        );
    }
    // Agent state.
    store::inventory::set_host_agent_status(&app.db.pool, h[0], AgentStatus::Restarting, None)
        .await
        .expect("set agent status");
    app.post(&format!("/compute/hosts/{}/agent/restart", h[0]))
        .await
        .assert_error(400, "AGENT_STATE_INVALID");
    assert_eq!(app.task_count().await, 0, "refusals create nothing");

    // What the guards admit.
    app.post(&op_path("start", cluster, stopped)).await.ok();
    app.post(&op_path("restart", cluster, running)).await.ok();
    app.post(&format!(
        "{}?force=true",
        op_path("restart", cluster, abnormal)
    ))
    .await
    .ok();
    // A target with a RUNNING task is busy for every operation on it.
    for op in ["restart", "stop"] {
        let a = app.post(&op_path(op, cluster, running)).await;
        a.assert_error(409, "TARGET_BUSY");
    }
    assert_eq!(app.task_count().await, 3);
}

// ---------------------------------------------------------------- idempotency

#[tokio::test]
async fn a_repeated_idempotency_key_returns_the_first_task() {
    let app = TestApp::start().await;
    let (cluster, server, host) = app.one_server("RUNNING").await;
    let post = |path: String, key: String| {
        app.send(
            app.client
                .post(app.url(&path))
                .header("Idempotency-Key", key),
        )
    };
    let first = post(restart_path(cluster, server), "key-1".into()).await;
    let id = first.ok()["id"].clone();
    let again = post(restart_path(cluster, server), "key-1".into()).await;
    assert_eq!(again.ok()["id"], id, "same task");
    assert_eq!(again.ok()["subtasks"], first.ok()["subtasks"]);
    assert_eq!(app.task_count().await, 1);

    // Another operation or target with the key is refused.
    let a = post(op_path("stop", cluster, server), "key-1".into()).await;
    a.assert_error(422, "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(a.error_target(), "Idempotency-Key");
    post(
        format!("/compute/hosts/{host}/agent/restart"),
        "key-1".into(),
    )
    .await
    .assert_error(422, "IDEMPOTENCY_KEY_REUSED");
    // Bad keys.
    post(restart_path(cluster, server), "k".repeat(129))
        .await
        .assert_invalid("Idempotency-Key");
    post(restart_path(cluster, server), "has space".into())
        .await
        .assert_invalid("Idempotency-Key");
    post(restart_path(cluster, server), String::new())
        .await
        .assert_invalid("Idempotency-Key");
    // A new key on the busy server is refused as busy.
    post(restart_path(cluster, server), "k".repeat(128))
        .await
        .assert_error(409, "TARGET_BUSY");
    // The key is replayed even after the server's state changed.
    store::inventory::set_server_status(
        &app.db.pool,
        server,
        store::inventory::ServerStatus::Restarting,
        None,
    )
    .await
    .expect("set server status");
    let again = post(restart_path(cluster, server), "key-1".into()).await;
    assert_eq!(again.ok()["id"], id);
    assert_eq!(app.task_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_with_one_key_all_get_the_one_task() {
    let app = TestApp::start().await;
    let (_, _, host) = app.one_server("RUNNING").await;
    let path = format!("/compute/hosts/{host}/agent/restart");
    let answers = futures::future::join_all((0..10).map(|_| {
        app.send(
            app.client
                .post(app.url(&path))
                .header("Idempotency-Key", "same-key"),
        )
    }))
    .await;
    let ids: BTreeSet<String> = answers.iter().map(|a| a.ok()["id"].to_string()).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(app.task_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_restarts_of_one_server_create_one_task() {
    let app = TestApp::start().await;
    let (cluster, server, _) = app.one_server("RUNNING").await;
    let path = restart_path(cluster, server);
    let answers = futures::future::join_all((0..50).map(|_| app.post(&path))).await;
    let ok: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.status.as_u16() == 200)
        .collect();
    assert_eq!(ok.len(), 1, "exactly one request creates the task");
    for a in answers.iter().filter(|a| a.status.as_u16() != 200) {
        a.assert_error(409, "TARGET_BUSY");
    }
    assert_eq!(app.task_count().await, 1);
    let row = store::task::get(
        &app.db.pool,
        TaskId(ok[0].data()["id"].as_i64().unwrap_or_default()),
    )
    .await
    .expect("read")
    .expect("stored");
    assert_eq!(row.status, taskd::model::TaskStatus::Running);
}

// ---------------------------------------------------------------- running

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_created_over_the_api_run_to_successful() {
    let app = TestApp::start().await;
    // Real actions come later: in this test every template step is a no-op.
    let mut registry = Registry::standard();
    for t in [
        Template::RestartObserver,
        Template::StartObserver,
        Template::StopObserver,
        Template::RestartAgent,
    ] {
        for n in t.nodes() {
            registry.register(&n.class_name, Noop);
        }
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let worker =
        tokio::spawn(Worker::new(app.db.pool.clone(), registry, fast_cfg()).run(stop.clone()));

    let hosts = [
        app.add_host("h1").await,
        app.add_host("h2").await,
        app.add_host("h3").await,
    ];
    let c = app
        .add_cluster(
            "protoss",
            &[
                ("z1", hosts[0], "RUNNING"),
                ("z2", hosts[1], "RUNNING"),
                ("z3", hosts[2], "STOPPED"),
            ],
        )
        .await;
    let cluster = c["id"].as_i64().unwrap_or_default();
    let server = |i: usize| {
        c["zones"][i]["servers"][0]["id"]
            .as_i64()
            .unwrap_or_default()
    };
    let mut ids = Vec::new();
    for path in [
        op_path("restart", cluster, server(0)),
        op_path("stop", cluster, server(1)),
        op_path("start", cluster, server(2)),
        format!("/compute/hosts/{}/agent/restart", hosts[0]),
    ] {
        let a = app.post(&path).await;
        assert_eq!(a.ok()["status"], "RUNNING");
        ids.push(a.data()["id"].as_i64().unwrap_or_default());
    }
    for id in ids {
        let path = format!("/api/v2/tasks/instances/{id}");
        let t = wait_for(
            &format!("task {id} to succeed"),
            Duration::from_secs(30),
            || async {
                let a = app.get(&path).await;
                match a.data()["status"].as_str() {
                    Some("SUCCESSFUL") => Some(a.data().clone()),
                    Some("FAILED") => panic!("task {id} failed: {:#}", a.body),
                    _ => None,
                }
            },
        )
        .await;
        assert!(t["finishTime"].is_string());
        for s in t["subtasks"].as_array().cloned().unwrap_or_default() {
            assert_eq!(s["status"], "SUCCESSFUL", "{s:#}");
            assert_eq!(s["runTime"], 1);
            assert!(s["startTime"].is_string() && s["finishTime"].is_string());
            assert!(
                s.get("executor").is_none(),
                "a finished subtask holds no worker"
            );
        }
        let first = t["subtasks"][0]["id"].as_i64().unwrap_or_default();
        let log = app
            .get(&format!("{path}/subtasks/{first}/log?runTime=1"))
            .await;
        assert!(
            log.ok()["log"]
                .as_str()
                .is_some_and(|l| l.contains("EXECUTE run 1 of")),
            "{:#}",
            log.body
        );
    }
    // The target is free again once its task is done.
    app.post(&op_path("restart", cluster, server(0))).await.ok();
    // After the demo-like run, /metrics shows the engine and HTTP series.
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        "taskd_subtasks_claimed_total{class_name=\"com.alipay.ocp.service.task.business.server.StopObServerTask\"}",
        "taskd_subtasks_finished_total{class_name=",
        "taskd_claim_batch_size_count",
        "taskd_handoff_latency_seconds_count",
        "taskd_http_requests_total{method=\"POST\",route=\"/api/v2/ob/clusters/{id}/servers/{serverId}/restart\",status=\"200\"}",
        "taskd_http_request_duration_seconds_count",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(series))
            .unwrap_or_else(|| panic!("{series} missing from /metrics:\n{text}"));
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(value > 0.0, "{line}");
    }
    stop.cancel();
    let _ = worker.await;
}
