//! The REST API over real HTTP: the envelope and trace ids, every error path
//! of the extractors and fallbacks, the inventory routes, task management
//! (list, read, retry, rollback, log, subtask retry/skip/cancel) and the
//! OpenAPI document.

use crate::app::{Answer, TestApp};
use crate::support::engine::{new_task, submit_with, worker};
use crate::support::routes::{method_of, ROUTES};
use crate::support::wait_for;
use reqwest::header::CONTENT_TYPE;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;
use taskd::dag::NodeSpec;
use taskd::model::TaskId;
use taskd::store;

fn is_rfc3339_millis(v: &Value) -> bool {
    let Some(s) = v.as_str() else { return false };
    let b = s.as_bytes();
    // 2021-09-05T22:46:20.220+08:00
    b.len() == 29
        && b[4] == b'-'
        && b[10] == b'T'
        && b[19] == b'.'
        && (b[23] == b'+' || b[23] == b'-')
        && b[26] == b':'
        && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

#[track_caller]
fn assert_envelope(a: &Answer, app: &TestApp) {
    let b = &a.body;
    assert!(b["successful"].is_boolean(), "{b:#}");
    assert!(is_rfc3339_millis(&b["timestamp"]), "{b:#}");
    assert!(b["duration"].is_u64(), "{b:#}");
    assert_eq!(b["status"], a.status.as_u16());
    assert_eq!(b["server"], app.addr.as_str());
    let trace = b["traceId"].as_str().unwrap_or_default();
    assert!(!trace.is_empty());
    assert_eq!(
        a.headers.get("x-trace-id").and_then(|v| v.to_str().ok()),
        Some(trace),
        "the X-Trace-Id header echoes traceId"
    );
    assert_eq!(
        a.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
}

fn is_hex16(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

// ---------------------------------------------------------------- envelope

#[tokio::test]
async fn health_and_readiness_answer_in_the_envelope() {
    let app = TestApp::start().await;
    let a = app.get("/healthz").await;
    assert_eq!(a.ok()["status"], "UP");
    assert_envelope(&a, &app);
    assert!(is_hex16(a.body["traceId"].as_str().unwrap_or_default()));
    let a = app.get("/readyz").await;
    assert_eq!(a.ok()["status"], "UP");
    assert_envelope(&a, &app);

    // A schema behind the binary is not ready.
    sqlx::query("delete from refinery_schema_history where version = 2")
        .execute(&app.db.pool)
        .await
        .expect("forget one migration");
    let a = app.get("/readyz").await;
    a.assert_error(503, "SERVICE_UNAVAILABLE");
    assert_envelope(&a, &app);
    // Liveness does not depend on the database.
    app.get("/healthz").await.ok();
}

#[tokio::test]
async fn readiness_fails_when_the_database_is_gone() {
    let app = TestApp::start().await;
    app.db.pool.close().await;
    let a = app.get("/readyz").await;
    a.assert_error(503, "SERVICE_UNAVAILABLE");
    assert!(!a.body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("pool"));
}

#[tokio::test]
async fn trace_ids_are_taken_from_the_header_when_valid() {
    let app = TestApp::start().await;
    let send = |trace: &str| {
        app.client
            .get(app.url("/healthz"))
            .header("X-Trace-Id", trace.to_string())
    };
    let a = app.send(send("my-trace_1.2")).await;
    assert_eq!(a.body["traceId"], "my-trace_1.2");
    assert_envelope(&a, &app);
    for bad in ["has space", "semi;colon", &"x".repeat(65), ""] {
        let a = app.send(send(bad)).await;
        let got = a.body["traceId"].as_str().unwrap_or_default();
        assert!(is_hex16(got), "{bad:?} must be replaced, got {got:?}");
        assert_envelope(&a, &app);
    }
    let a = app.send(send(&"y".repeat(64))).await;
    assert_eq!(a.body["traceId"], "y".repeat(64));
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_envelope() {
    let app = TestApp::start().await;
    let a = app.get("/no/such/route").await;
    a.assert_error(404, "NOT_FOUND");
    assert_envelope(&a, &app);
    let a = app.get("/api/v2/tasks/instances/1/nothing").await;
    a.assert_error(404, "NOT_FOUND");
    let a = app.request(Method::DELETE, "/api/v2/tasks/instances").await;
    a.assert_error(405, "METHOD_NOT_ALLOWED");
    assert_envelope(&a, &app);
    assert!(a.headers.get("allow").is_some());
    let a = app.get("/api/v2/tasks/instances/1/retry").await;
    a.assert_error(405, "METHOD_NOT_ALLOWED");
    let a = app.get("/compute/hosts/1/agent/restart").await;
    a.assert_error(405, "METHOD_NOT_ALLOWED");
    let a = app.request(Method::PUT, "/healthz").await;
    a.assert_error(405, "METHOD_NOT_ALLOWED");
}

#[tokio::test]
async fn a_panicking_handler_answers_a_500_envelope_without_details() {
    use axum::routing::get;
    let db = crate::support::TestDb::new().await;
    let state = taskd::http::AppState::new(db.pool.clone(), "test-server");
    fn boom() -> &'static str {
        panic!("secret detail")
    }
    let routes = axum::Router::new().route("/boom", get(|| async { boom() }));
    let app = taskd::http::layered(routes, state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}/boom"))
        .header("X-Trace-Id", "panic-1")
        .send()
        .await
        .expect("an answer");
    assert_eq!(resp.status().as_u16(), 500);
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body["successful"], false);
    assert_eq!(body["status"], 500);
    assert_eq!(body["traceId"], "panic-1");
    assert_eq!(body["server"], "test-server");
    assert_eq!(body["error"]["code"], "INTERNAL_ERROR");
    assert!(!body.to_string().contains("secret"), "{body:#}");
    shutdown.cancel();
}

// ---------------------------------------------------------------- bodies

#[tokio::test]
async fn request_bodies_are_checked_and_every_rejection_names_the_field() {
    let app = TestApp::start().await;
    let path = "/api/v2/compute/hosts";
    let raw = |ct: Option<&str>, body: Vec<u8>| {
        let mut r = app.client.post(app.url(path)).body(body);
        if let Some(ct) = ct {
            r = r.header(CONTENT_TYPE, ct);
        }
        r
    };
    // Content type.
    let a = app.send(raw(None, b"{}".to_vec())).await;
    a.assert_error(415, "UNSUPPORTED_MEDIA_TYPE");
    assert_eq!(a.error_target(), "Content-Type");
    assert_envelope(&a, &app);
    let a = app.send(raw(Some("text/plain"), b"{}".to_vec())).await;
    a.assert_error(415, "UNSUPPORTED_MEDIA_TYPE");
    // Malformed and empty JSON.
    let a = app
        .send(raw(Some("application/json"), b"{\"name\":".to_vec()))
        .await;
    a.assert_error(400, "MALFORMED_JSON");
    assert_eq!(a.error_target(), "body");
    let a = app.send(raw(Some("application/json"), Vec::new())).await;
    a.assert_error(400, "MALFORMED_JSON");
    let a = app
        .send(raw(
            Some("application/json; charset=utf-8"),
            b"[1,2]".to_vec(),
        ))
        .await;
    a.assert_invalid("body");
    // Shape errors name the field.
    let good = json!({"name": "h", "ip": "10.0.0.1", "agentUrl": "http://10.0.0.1:62888"});
    let mut unknown = good.clone();
    unknown["color"] = json!("blue");
    app.post_json(path, &unknown).await.assert_invalid("color");
    let mut wrong = good.clone();
    wrong["ip"] = json!(5);
    app.post_json(path, &wrong).await.assert_invalid("ip");
    let mut missing = good.clone();
    if let Some(o) = missing.as_object_mut() {
        o.remove("agentUrl");
    }
    app.post_json(path, &missing)
        .await
        .assert_invalid("agentUrl");
    let mut status = good.clone();
    status["agentStatus"] = json!("SLEEPING");
    app.post_json(path, &status)
        .await
        .assert_invalid("agentStatus");
    // Too large: a declared length, and a chunked body without one.
    let big = vec![b' '; (1 << 20) + 10];
    let a = app.send(raw(Some("application/json"), big.clone())).await;
    a.assert_error(413, "PAYLOAD_TOO_LARGE");
    assert_eq!(a.error_target(), "body");
    assert_envelope(&a, &app);
    let frames: Vec<Result<http_body::Frame<axum::body::Bytes>, std::io::Error>> = big
        .chunks(64 * 1024)
        .map(|c| {
            Ok(http_body::Frame::data(axum::body::Bytes::copy_from_slice(
                c,
            )))
        })
        .collect();
    let chunked = http_body_util::StreamBody::new(futures::stream::iter(frames));
    let a = app
        .send(
            app.client
                .post(app.url(path))
                .header(CONTENT_TYPE, "application/json")
                .body(reqwest::Body::wrap(chunked)),
        )
        .await;
    a.assert_error(413, "PAYLOAD_TOO_LARGE");
    // Nothing was created by any of it.
    let a = app.get(path).await;
    assert_eq!(a.ok()["page"]["totalElements"], 0);
    // And the good body works.
    app.post_json(path, &good).await.ok();
}

// ---------------------------------------------------------------- inventory

#[tokio::test]
async fn hosts_are_added_read_listed_and_validated() {
    let app = TestApp::start().await;
    let a = app
        .post_json(
            "/api/v2/compute/hosts",
            &json!({"name": "host-1", "ip": "10.0.0.1", "agentUrl": "http://10.0.0.1:62888/",
                    "agentStatus": "ONLINE"}),
        )
        .await;
    assert_envelope(&a, &app);
    let host = a.ok().clone();
    assert_eq!(host["name"], "host-1");
    assert_eq!(host["agentUrl"], "http://10.0.0.1:62888");
    assert_eq!(host["agentStatus"], "ONLINE");
    assert!(is_rfc3339_millis(&host["createTime"]));
    let id = host["id"].as_i64().unwrap_or_default();
    let a = app.get(&format!("/api/v2/compute/hosts/{id}")).await;
    assert_eq!(a.ok(), &host);

    // Defaults, then a page of the list.
    for n in 2..=3 {
        let a = app
            .post_json(
                "/api/v2/compute/hosts",
                &json!({"name": format!("host-{n}"), "ip": "::1", "agentUrl": "https://h"}),
            )
            .await;
        assert_eq!(a.ok()["agentStatus"], "UNKNOWN");
    }
    let a = app.get("/api/v2/compute/hosts?page=2&size=2").await;
    let page = a.ok();
    assert_eq!(
        page["page"],
        json!({"totalElements": 3, "totalPages": 2, "number": 2, "size": 2})
    );
    assert_eq!(page["contents"][0]["name"], "host-3");
    let a = app.get("/api/v2/compute/hosts").await;
    assert_eq!(a.ok()["page"]["size"], 10);
    assert_eq!(a.ok()["contents"].as_array().map(Vec::len), Some(3));

    // Errors.
    let a = app
        .post_json(
            "/api/v2/compute/hosts",
            &json!({"name": "host-1", "ip": "10.0.0.9", "agentUrl": "http://x"}),
        )
        .await;
    a.assert_error(409, "DUPLICATE");
    assert_eq!(a.error_target(), "name");
    let a = app
        .post_json(
            "/api/v2/compute/hosts",
            &json!({"name": "", "ip": "10.0.0.300", "agentUrl": "ftp://x"}),
        )
        .await;
    a.assert_invalid("name");
    let fields: Vec<&str> = a.body["error"]["subErrors"]
        .as_array()
        .map(|s| s.iter().filter_map(|e| e["field"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(fields, ["name", "ip", "agentUrl"]);
    assert_eq!(
        a.body["error"]["subErrors"][1]["rejectedValue"],
        "10.0.0.300"
    );
    app.get("/api/v2/compute/hosts/999")
        .await
        .assert_error(404, "HOST_NOT_FOUND");
    app.get("/api/v2/compute/hosts/abc")
        .await
        .assert_invalid("id");
    app.get("/api/v2/compute/hosts/0")
        .await
        .assert_invalid("id");
    app.get("/api/v2/compute/hosts/-3")
        .await
        .assert_invalid("id");
    app.get("/api/v2/compute/hosts/99999999999999999999")
        .await
        .assert_invalid("id");
    app.get("/api/v2/compute/hosts?size=2001")
        .await
        .assert_invalid("size");
    app.get("/api/v2/compute/hosts?page=0")
        .await
        .assert_invalid("page");
    app.get("/api/v2/compute/hosts?page=x")
        .await
        .assert_invalid("page");
}

#[tokio::test]
async fn clusters_are_added_whole_or_not_at_all() {
    let app = TestApp::start().await;
    let h1 = app.add_host("h1").await;
    let h2 = app.add_host("h2").await;
    let body = json!({
        "name": "protoss", "obClusterId": 12000001,
        "zones": [
            {"name": "zone1", "servers": [{"hostId": h1}, {"hostId": h1, "sqlPort": 3881, "rpcPort": 3882}]},
            {"name": "zone2", "status": "STOPPED",
             "servers": [{"hostId": h2, "ip": "10.0.0.2", "status": "STOPPED"}]}
        ]
    });
    let a = app.post_json("/api/v2/ob/clusters", &body).await;
    assert_envelope(&a, &app);
    let c = a.ok().clone();
    assert_eq!(c["name"], "protoss");
    assert_eq!(c["obClusterId"], 12000001);
    assert_eq!(c["status"], "RUNNING");
    assert_eq!(c["zones"][1]["status"], "STOPPED");
    let s = &c["zones"][0]["servers"][0];
    assert_eq!(
        (s["sqlPort"].as_i64(), s["rpcPort"].as_i64()),
        (Some(2881), Some(2882))
    );
    assert_eq!(
        s["ip"], "127.0.0.1",
        "a server takes its host's IP by default"
    );
    assert_eq!(s["zoneName"], "zone1");
    assert_eq!(c["zones"][1]["servers"][0]["ip"], "10.0.0.2");
    assert_eq!(c["zones"][1]["servers"][0]["status"], "STOPPED");
    let id = c["id"].as_i64().unwrap_or_default();

    let a = app.get(&format!("/api/v2/ob/clusters/{id}")).await;
    assert_eq!(a.ok(), &c);
    let a = app.get("/api/v2/ob/clusters").await;
    assert_eq!(a.ok()["page"]["totalElements"], 1);
    assert_eq!(a.ok()["contents"][0], c);
    let a = app.get(&format!("/api/v2/ob/clusters/{id}/servers")).await;
    let servers = a.ok();
    assert_eq!(servers["page"]["totalElements"], 3);
    assert_eq!(servers["contents"][2]["zoneName"], "zone2");
    let a = app
        .get(&format!("/api/v2/ob/clusters/{id}/servers?page=2&size=2"))
        .await;
    assert_eq!(a.ok()["contents"].as_array().map(Vec::len), Some(1));
    assert_eq!(a.ok()["page"]["totalPages"], 2);

    // Refusals create nothing.
    let mut dup = body.clone();
    app.post_json("/api/v2/ob/clusters", &dup)
        .await
        .assert_error(409, "DUPLICATE");
    dup["name"] = json!("zerg");
    dup["zones"] = json!([{"name": "zone1"}, {"name": "zone1"}]);
    let a = app.post_json("/api/v2/ob/clusters", &dup).await;
    a.assert_error(409, "DUPLICATE");
    assert_eq!(a.error_target(), "zones[1].name");
    let a = app
        .post_json(
            "/api/v2/ob/clusters",
            &json!({"name": "zerg", "obClusterId": 1,
                    "zones": [{"name": "z", "servers": [{"hostId": h1}]}]}),
        )
        .await;
    a.assert_error(409, "DUPLICATE");
    assert_eq!(a.error_target(), "zones[0].servers[0]");
    let a = app
        .post_json(
            "/api/v2/ob/clusters",
            &json!({"name": "zerg", "obClusterId": 1,
                    "zones": [{"name": "z", "servers": [{"hostId": 424242, "sqlPort": 9}]}]}),
        )
        .await;
    a.assert_invalid("zones[0].servers[0].hostId");
    let a = app
        .post_json(
            "/api/v2/ob/clusters",
            &json!({"name": "zerg", "obClusterId": 1,
                    "zones": [{"name": "z", "servers": [{"hostId": h2, "sqlPort": 70000}]}]}),
        )
        .await;
    a.assert_invalid("zones[0].servers[0].sqlPort");
    let a = app
        .post_json(
            "/api/v2/ob/clusters",
            &json!({"name": "zerg", "obClusterId": 1,
                    "zones": [{"name": "z", "servers": [{"hostId": h2, "port": 1}]}]}),
        )
        .await;
    a.assert_invalid("zones[0].servers[0].port");
    let a = app
        .post_json(
            "/api/v2/ob/clusters",
            &json!({"name": "zerg", "obClusterId": 1, "zones": [{"name": "z", "status": "RUNNING!"}]}),
        )
        .await;
    a.assert_invalid("zones[0].status");
    let a = app.get("/api/v2/ob/clusters").await;
    assert_eq!(
        a.ok()["page"]["totalElements"],
        1,
        "no partial cluster was left"
    );

    app.get("/api/v2/ob/clusters/77")
        .await
        .assert_error(404, "CLUSTER_NOT_FOUND");
    app.get("/api/v2/ob/clusters/77/servers")
        .await
        .assert_error(404, "CLUSTER_NOT_FOUND");
    app.get("/api/v2/ob/clusters/x/servers")
        .await
        .assert_invalid("id");
    app.get("/api/v2/ob/clusters?size=0")
        .await
        .assert_invalid("size");
}

// ---------------------------------------------------------------- tasks

/// A task whose first step always fails: a (test.fail) → b (test.noop).
async fn failing_task(app: &TestApp, prohibit_rollback: bool) -> (i64, i64, i64) {
    let mut t = new_task("Zeta failing task");
    t.prohibit_rollback = prohibit_rollback;
    let id = submit_with(
        &app.db,
        t,
        vec![
            NodeSpec::new("a", "test.fail", 10),
            NodeSpec::new("b", "test.noop", 10).after(&["a"]),
        ],
    )
    .await;
    let subs = store::subtask::list_for_task(&app.db.pool, id)
        .await
        .expect("subtasks");
    (id.0, subs[0].id, subs[1].id)
}

/// What a refused action must leave untouched.
async fn snapshot(app: &TestApp, id: i64) -> String {
    let t = store::task::get(&app.db.pool, TaskId(id))
        .await
        .expect("read")
        .expect("the task");
    let subs = store::subtask::list_for_task(&app.db.pool, TaskId(id))
        .await
        .expect("read");
    let subs: Vec<_> = subs
        .iter()
        .map(|s| (s.id, s.status, s.operation, s.run_time, s.finish_time))
        .collect();
    format!(
        "{:?} {:?} {:?} {:?}",
        t.status, t.operation, t.finish_time, subs
    )
}

#[tokio::test]
async fn task_actions_follow_the_state_machine_and_refusals_change_nothing() {
    let app = TestApp::start().await;
    let (id, a_id, b_id) = failing_task(&app, false).await;
    let task_path = format!("/api/v2/tasks/instances/{id}");

    // RUNNING: retry and rollback are refused and change nothing.
    let before = snapshot(&app, id).await;
    let a = app.post(&format!("{task_path}/retry")).await;
    a.assert_error(400, "TASK_STATE_INVALID");
    assert_envelope(&a, &app);
    app.post(&format!("{task_path}/rollback"))
        .await
        .assert_error(400, "TASK_STATE_INVALID");
    app.post(&format!("{task_path}/subtasks/{a_id}/skip"))
        .await
        .assert_error(400, "SUBTASK_CANNOT_SKIP");
    app.post(&format!("{task_path}/subtasks/{a_id}/retry"))
        .await
        .assert_error(400, "SUBTASK_STATE_INVALID");
    app.post(&format!("{task_path}/subtasks/{b_id}/cancel"))
        .await
        .assert_error(400, "SUBTASK_STATE_INVALID");
    assert_eq!(snapshot(&app, id).await, before);

    // Run it: a fails, the task is FAILED.
    let w = worker(&app.db);
    w.drain().await.expect("drain");
    let t = app.get(&task_path).await;
    assert_eq!(t.ok()["status"], "FAILED");
    assert!(is_rfc3339_millis(&t.ok()["finishTime"]));
    assert_eq!(t.ok()["subtasks"][0]["status"], "FAILED");
    assert!(is_rfc3339_millis(&t.ok()["subtasks"][0]["startTime"]));

    // Retry the task: RUNNING/RETRY, a READY again with runTime 2.
    let a = app.post(&format!("{task_path}/retry")).await;
    assert_envelope(&a, &app);
    let t = a.ok();
    assert_eq!(
        (t["status"].as_str(), t["operation"].as_str()),
        (Some("RUNNING"), Some("RETRY"))
    );
    assert!(t.get("finishTime").is_none(), "null fields are omitted");
    assert_eq!(t["subtasks"][0]["status"], "READY");
    assert_eq!(t["subtasks"][0]["operation"], "RETRY");
    assert_eq!(t["subtasks"][0]["runTime"], 2);
    w.drain().await.expect("drain");

    // Retry just the subtask: it is returned, READY/RETRY, runTime 3.
    let a = app
        .post(&format!("{task_path}/subtasks/{a_id}/retry"))
        .await;
    let s = a.ok();
    assert_eq!(s["id"], a_id);
    assert_eq!(
        (s["status"].as_str(), s["operation"].as_str()),
        (Some("READY"), Some("RETRY"))
    );
    assert_eq!(s["runTime"], 3);
    assert_eq!(s["downstreams"], json!([b_id]));
    assert_eq!(s["upstreams"], json!([]));
    w.drain().await.expect("drain");

    // The log: one separator per run, filterable by runTime.
    let a = app.get(&format!("{task_path}/subtasks/{a_id}/log")).await;
    let log = a.ok()["log"].as_str().unwrap_or_default().to_string();
    assert_eq!(log.matches("====================").count(), 6, "{log}");
    assert!(log.contains('\n'));
    let a = app
        .get(&format!("{task_path}/subtasks/{a_id}/log?runTime=2"))
        .await;
    let run2 = a.ok()["log"].as_str().unwrap_or_default();
    assert!(run2.contains("run 2") && !run2.contains("run 1 "), "{run2}");
    let a = app.get(&format!("{task_path}/subtasks/{b_id}/log")).await;
    assert_eq!(a.ok()["log"], "", "b never ran");
    app.get(&format!("{task_path}/subtasks/{a_id}/log?runTime=0"))
        .await
        .assert_invalid("runTime");
    app.get(&format!("{task_path}/subtasks/{a_id}/log?runTime=x"))
        .await
        .assert_invalid("runTime");

    // Skip the failed subtask: no data; b runs and the task succeeds.
    let a = app.post(&format!("{task_path}/subtasks/{a_id}/skip")).await;
    a.ok();
    assert!(a.body.get("data").is_none(), "{:#}", a.body);
    assert_envelope(&a, &app);
    w.drain().await.expect("drain");
    let t = app.get(&task_path).await;
    assert_eq!(t.ok()["status"], "SUCCESSFUL");
    assert_eq!(t.ok()["subtasks"][0]["operation"], "SKIP");
    let before = snapshot(&app, id).await;
    app.post(&format!("{task_path}/rollback"))
        .await
        .assert_error(400, "TASK_STATE_INVALID");
    app.post(&format!("{task_path}/retry"))
        .await
        .assert_error(400, "TASK_STATE_INVALID");
    assert_eq!(snapshot(&app, id).await, before);
}

#[tokio::test]
async fn rollback_is_returned_and_refused_when_prohibited() {
    let app = TestApp::start().await;
    let (id, _, _) = failing_task(&app, false).await;
    let (prohibited, _, _) = failing_task(&app, true).await;
    let w = worker(&app.db);
    w.drain().await.expect("drain");

    let before = snapshot(&app, prohibited).await;
    let a = app
        .post(&format!("/api/v2/tasks/instances/{prohibited}/rollback"))
        .await;
    a.assert_error(400, "TASK_PROHIBIT_ROLLBACK");
    assert_eq!(snapshot(&app, prohibited).await, before);

    let a = app
        .post(&format!("/api/v2/tasks/instances/{id}/rollback"))
        .await;
    let t = a.ok();
    assert_eq!(
        (t["status"].as_str(), t["operation"].as_str()),
        (Some("RUNNING"), Some("ROLLBACK"))
    );
    assert_eq!(t["subtasks"][0]["operation"], "ROLLBACK");
    w.drain().await.expect("drain");
    let t = app.get(&format!("/api/v2/tasks/instances/{id}")).await;
    assert_eq!(t.ok()["status"], "SUCCESSFUL");
    assert_eq!(t.ok()["operation"], "ROLLBACK");
}

#[tokio::test]
async fn cancel_reaches_a_running_subtask() {
    let app = TestApp::start().await;
    let id = submit_with(
        &app.db,
        new_task("hanging task"),
        vec![NodeSpec::new("hang", "test.hang", 60)],
    )
    .await;
    let sub = store::subtask::list_for_task(&app.db.pool, id)
        .await
        .expect("subtasks")[0]
        .id;
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(worker(&app.db).run(stop.clone()));
    let path = format!("/api/v2/tasks/instances/{}", id.0);
    wait_for("the subtask to run", Duration::from_secs(10), || async {
        let t = app.get(&path).await;
        (t.data()["subtasks"][0]["status"] == "RUNNING").then_some(())
    })
    .await;
    let a = app.post(&format!("{path}/subtasks/{sub}/cancel")).await;
    a.ok();
    assert!(a.body.get("data").is_none());
    let t = wait_for("the cancel to land", Duration::from_secs(10), || async {
        let t = app.get(&path).await;
        (t.data()["status"] == "FAILED").then(|| t.data().clone())
    })
    .await;
    assert_eq!(t["subtasks"][0]["status"], "FAILED");
    assert_eq!(t["subtasks"][0]["operation"], "CANCEL");
    stop.cancel();
    let _ = running.await;
}

#[tokio::test]
async fn unknown_tasks_and_subtasks_are_404_and_bad_ids_400() {
    let app = TestApp::start().await;
    let (id, a_id, _) = failing_task(&app, false).await;
    let (other, other_sub, _) = failing_task(&app, false).await;
    let t = "/api/v2/tasks/instances";
    app.get(&format!("{t}/424242"))
        .await
        .assert_error(404, "TASK_NOT_FOUND");
    for action in ["retry", "rollback"] {
        app.post(&format!("{t}/424242/{action}"))
            .await
            .assert_error(404, "TASK_NOT_FOUND");
    }
    for action in ["retry", "skip", "cancel"] {
        app.post(&format!("{t}/424242/subtasks/{a_id}/{action}"))
            .await
            .assert_error(404, "TASK_NOT_FOUND");
        // A subtask of another task is not this task's.
        app.post(&format!("{t}/{id}/subtasks/{other_sub}/{action}"))
            .await
            .assert_error(404, "SUBTASK_NOT_FOUND");
        app.post(&format!("{t}/{other}/subtasks/{a_id}/{action}"))
            .await
            .assert_error(404, "SUBTASK_NOT_FOUND");
        app.post(&format!("{t}/{id}/subtasks/abc/{action}"))
            .await
            .assert_invalid("subtaskInstanceId");
    }
    app.get(&format!("{t}/{id}/subtasks/{other_sub}/log"))
        .await
        .assert_error(404, "SUBTASK_NOT_FOUND");
    app.get(&format!("{t}/424242/subtasks/{a_id}/log"))
        .await
        .assert_error(404, "TASK_NOT_FOUND");
    app.get(&format!("{t}/abc"))
        .await
        .assert_invalid("taskInstanceId");
    app.get(&format!("{t}/0"))
        .await
        .assert_invalid("taskInstanceId");
    app.post(&format!("{t}/1.5/retry"))
        .await
        .assert_invalid("taskInstanceId");
    app.get(&format!("{t}/{id}/subtasks/0/log"))
        .await
        .assert_invalid("subtaskInstanceId");
}

#[tokio::test]
async fn the_task_list_filters_sorts_and_pages() {
    let app = TestApp::start().await;
    // First a task the worker fails (engine-submitted, creator "tester"),
    // then three over the API that stay RUNNING (no worker runs them).
    let (failed, _, _) = failing_task(&app, false).await;
    worker(&app.db).drain().await.expect("drain");
    let (cluster, server, host) = app.one_server("RUNNING").await;
    let h2 = app.add_host("host-b").await;
    let c2 = app.add_cluster("zerg", &[("z1", h2, "STOPPED")]).await;
    let (c2_id, s2) = (
        c2["id"].as_i64().unwrap_or_default(),
        c2["zones"][0]["servers"][0]["id"]
            .as_i64()
            .unwrap_or_default(),
    );
    let restart = app
        .post(&format!(
            "/api/v2/ob/clusters/{cluster}/servers/{server}/restart"
        ))
        .await
        .ok()["id"]
        .as_i64()
        .unwrap_or_default();
    let start = app
        .post(&format!("/api/v2/ob/clusters/{c2_id}/servers/{s2}/start"))
        .await
        .ok()["id"]
        .as_i64()
        .unwrap_or_default();
    let agent = app
        .post(&format!("/compute/hosts/{host}/agent/restart"))
        .await
        .ok()["id"]
        .as_i64()
        .unwrap_or_default();
    let ids = |a: &Answer| -> Vec<i64> {
        a.ok()["contents"]
            .as_array()
            .map(|c| c.iter().filter_map(|t| t["id"].as_i64()).collect())
            .unwrap_or_default()
    };
    let list = "/api/v2/tasks/instances";

    let a = app.get(list).await;
    assert_envelope(&a, &app);
    assert_eq!(
        a.ok()["page"],
        json!({"totalElements": 4, "totalPages": 1, "number": 1, "size": 10})
    );
    assert_eq!(
        ids(&a),
        [agent, start, restart, failed],
        "newest first by default"
    );
    assert!(a.ok()["contents"][0]["subtasks"]
        .as_array()
        .is_some_and(|s| s.len() == 5));
    let a = app.get(&format!("{list}?sort=id,asc")).await;
    assert_eq!(ids(&a)[0], failed);
    let a = app.get(&format!("{list}?sort=name")).await;
    assert_eq!(
        ids(&a),
        [restart, agent, start, failed],
        "Restart OB server < Restart OCP agent < Start OB server < Zeta failing task"
    );
    let a = app
        .get(&format!("{list}?sort=createTime,desc&size=1&page=2"))
        .await;
    assert_eq!(ids(&a), [start]);
    assert_eq!(a.ok()["page"]["totalPages"], 4);
    let a = app.get(&format!("{list}?page=9")).await;
    assert_eq!(ids(&a), Vec::<i64>::new());

    let a = app.get(&format!("{list}?name=ob%20SERVER")).await;
    assert_eq!(ids(&a), [start, restart]);
    let a = app.get(&format!("{list}?clusterId={cluster}")).await;
    assert_eq!(ids(&a), [restart]);
    assert_eq!(a.ok()["contents"][0]["cluster"]["name"], "protoss");
    let a = app.get(&format!("{list}?hostId={host}")).await;
    assert_eq!(ids(&a), [agent]);
    let a = app.get(&format!("{list}?creator=admin")).await;
    assert_eq!(ids(&a), [agent, start, restart]);
    let a = app.get(&format!("{list}?creator=tester&type=MANUAL")).await;
    assert_eq!(ids(&a), [failed]);
    let a = app.get(&format!("{list}?type=SCHEDULED")).await;
    assert_eq!(ids(&a), Vec::<i64>::new());
    let a = app.get(&format!("{list}?status=FAILED,SUCCESSFUL")).await;
    assert_eq!(ids(&a), [failed]);
    let a = app.get(&format!("{list}?status=RUNNING")).await;
    assert_eq!(ids(&a), [agent, start, restart]);
    let a = app
        .get(&format!("{list}?status=RUNNING&name=failing"))
        .await;
    assert_eq!(ids(&a), Vec::<i64>::new());

    // Bad values name their parameter.
    for (q, field) in [
        ("size=2001", "size"),
        ("size=0", "size"),
        ("size=ten", "size"),
        ("page=0", "page"),
        ("page=-1", "page"),
        ("page=x", "page"),
        ("sort=bogus,desc", "sort"),
        ("sort=id,upward", "sort"),
        ("status=RUNNING,DONE", "status"),
        ("type=HOURLY", "type"),
        ("clusterId=abc", "clusterId"),
        ("hostId=1.5", "hostId"),
    ] {
        let a = app.get(&format!("{list}?{q}")).await;
        a.assert_invalid(field);
        assert_envelope(&a, &app);
    }
    app.get(&format!("{list}?size=2000")).await.ok();
}

// ---------------------------------------------------------------- openapi

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                if k == "$ref" {
                    if let Some(s) = v.as_str() {
                        out.push(s.to_string());
                    }
                } else {
                    collect_refs(v, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_openapi_document_covers_every_route_and_schema() {
    let app = TestApp::start().await;
    let a = app.get("/api/v2/openapi.json").await;
    assert_eq!(a.status.as_u16(), 200);
    assert!(a.headers.get("x-trace-id").is_some());
    let doc = &a.body;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let paths = doc["paths"].as_object().cloned().unwrap_or_default();
    let mut documented = 0;
    for (method, path) in ROUTES {
        let op = &paths
            .get(*path)
            .unwrap_or_else(|| panic!("{path} is not documented"))[*method];
        assert!(op.is_object(), "{method} {path} is not documented");
        assert!(
            op["responses"]["200"].is_object(),
            "{method} {path} has no 200"
        );
        // Every path parameter is declared.
        let declared: Vec<&str> = op["parameters"]
            .as_array()
            .map(|p| {
                p.iter()
                    .filter(|p| p["in"] == "path")
                    .filter_map(|p| p["name"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        for seg in path.split('/').filter(|s| s.starts_with('{')) {
            let name = seg.trim_matches(|c| c == '{' || c == '}');
            assert!(declared.contains(&name), "{method} {path} lacks {name}");
        }
        documented += 1;
    }
    let total: usize = paths
        .values()
        .map(|p| p.as_object().map_or(0, |o| o.len()))
        .sum();
    assert_eq!(
        total, documented,
        "the document has routes the app does not serve"
    );
    // Every schema a route refers to is defined.
    let schemas = doc["components"]["schemas"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut refs = Vec::new();
    collect_refs(doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let name = r.trim_start_matches("#/components/schemas/");
        assert!(schemas.contains_key(name), "{r} is not defined");
    }
    for s in [
        "TaskView",
        "SubtaskView",
        "Context",
        "ErrorEnvelope",
        "ErrorBody",
        "SubError",
        "Envelope_TaskView",
        "Envelope_Paged_TaskView",
        "CreateHost",
        "CreateCluster",
        "HostView",
        "ClusterView",
        "ServerView",
        "LogView",
        "UserView",
        "RoleView",
        "RoleGrant",
        "CreateUser",
        "SetRoles",
        "SetPassword",
    ] {
        assert!(schemas.contains_key(s), "schema {s} is missing");
    }
    // Documented routes all answer (not 404/405) on the live server.
    for (method, path) in ROUTES {
        let concrete = path
            .replace("{id}", "1")
            .replace("{serverId}", "1")
            .replace("{hostId}", "1")
            .replace("{taskInstanceId}", "1")
            .replace("{subtaskInstanceId}", "1");
        let m = method_of(method);
        let a = app.request(m, &concrete).await;
        assert!(
            a.status.as_u16() != 405 && a.error_code() != "NOT_FOUND",
            "{method} {path}: {:#}",
            a.body
        );
    }
}
