//! Hostile input: a seeded random walk over the HTTP API (paths, ids, query
//! strings, bodies, headers, huge and deeply nested bodies, invalid UTF-8,
//! SQL metacharacters). Every answer is below 500 and in the envelope, and a
//! refused request changes nothing in the database.

use crate::app::TestApp;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TEMPLATES: &[&str] = &[
    "/api/v2/ob/clusters/{a}/servers/{b}/restart",
    "/api/v2/ob/clusters/{a}/servers/{b}/start",
    "/api/v2/ob/clusters/{a}/servers/{b}/stop",
    "/compute/hosts/{a}/agent/restart",
    "/api/v2/compute/hosts/{a}/agent/restart",
    "/api/v2/tasks/instances",
    "/api/v2/tasks/instances/{a}",
    "/api/v2/tasks/instances/{a}/retry",
    "/api/v2/tasks/instances/{a}/rollback",
    "/api/v2/tasks/instances/{a}/subtasks/{b}/log",
    "/api/v2/tasks/instances/{a}/subtasks/{b}/retry",
    "/api/v2/tasks/instances/{a}/subtasks/{b}/skip",
    "/api/v2/tasks/instances/{a}/subtasks/{b}/cancel",
    "/api/v2/compute/hosts",
    "/api/v2/compute/hosts/{a}",
    "/api/v2/ob/clusters",
    "/api/v2/ob/clusters/{a}",
    "/api/v2/ob/clusters/{a}/servers",
    "/healthz",
    "/readyz",
    "/{a}",
    "/api/v2/{a}/{b}",
];

const NASTY: &[&str] = &[
    "1",
    "0",
    "-1",
    "999999999",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "1.5",
    "1e3",
    "abc",
    "%27%20or%201%3D1--",
    "1%3Bdrop%20table%20task_instance",
    "%00",
    "%ZZ",
    "..%2F..%2Fetc%2Fpasswd",
    "%F0%9F%92%A9",
    "%C3%28",
    "null",
    "true",
    "%20",
    "",
];

fn pick<'a, T>(r: &mut StdRng, xs: &'a [T]) -> &'a T {
    &xs[r.gen_range(0..xs.len())]
}

fn random_query(r: &mut StdRng) -> String {
    let keys = [
        "page",
        "size",
        "sort",
        "status",
        "name",
        "type",
        "clusterId",
        "hostId",
        "creator",
        "force",
        "runTime",
        "x",
    ];
    let values = [
        "1",
        "0",
        "-5",
        "2001",
        "99999999999999999999",
        "id,desc",
        "id;drop",
        "createTime,sideways",
        "RUNNING,FAILED",
        "RUNNING,,",
        "DONE",
        "MANUAL",
        "true",
        "yes",
        "'",
        "%25",
        "%ZZ",
        "%00",
        "a%20b",
        "",
        "%E2%80%AE",
    ];
    let n = r.gen_range(0..4);
    (0..n)
        .map(|_| format!("{}={}", pick(r, &keys), pick(r, &values)))
        .collect::<Vec<_>>()
        .join("&")
}

fn nested(depth: usize) -> String {
    "[".repeat(depth) + &"]".repeat(depth)
}

fn random_body(r: &mut StdRng) -> Option<Vec<u8>> {
    Some(match r.gen_range(0..12) {
        0 => return None,
        1 => b"{".to_vec(),
        2 => b"not json".to_vec(),
        3 => vec![0xff, 0xfe, b'{', 0xc3, 0x28, b'}'],
        4 => nested(10_000).into_bytes(),
        5 => vec![b' '; 2 * 1024 * 1024],
        6 => json!({"name": "x'; drop table host; --", "ip": "127.0.0.1", "agentUrl": "http://127.0.0.1:1"})
            .to_string()
            .into_bytes(),
        7 => json!({"name": "c", "obClusterId": -1, "zones": [{"name": "", "servers": [{"hostId": "x"}]}]})
            .to_string()
            .into_bytes(),
        8 => json!({"unknown": 1}).to_string().into_bytes(),
        9 => json!([1, 2, 3]).to_string().into_bytes(),
        10 => json!({"name": "a".repeat(100_000), "ip": "1", "agentUrl": "ftp://x"})
            .to_string()
            .into_bytes(),
        _ => json!(null).to_string().into_bytes(),
    })
}

/// Everything a request could change, as one digest.
async fn fingerprint(app: &TestApp) -> String {
    sqlx::query_scalar(
        "select md5(concat_ws('|', \
            (select string_agg(id || status || operation, ',' order by id) from task_instance), \
            (select string_agg(id || status || operation || run_time, ',' order by id) from subtask_instance), \
            (select string_agg(id || name || agent_status, ',' order by id) from host), \
            (select string_agg(id || name || status, ',' order by id) from ob_cluster), \
            (select string_agg(id || status, ',' order by id) from ob_zone), \
            (select string_agg(id || status, ',' order by id) from ob_server)))",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("fingerprint")
}

fn check_envelope(what: &str, status: u16, body: &[u8]) {
    assert!(
        status < 500,
        "{what}: {status} {}",
        String::from_utf8_lossy(body)
    );
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("{what}: not JSON: {}", String::from_utf8_lossy(body)));
    for k in [
        "successful",
        "timestamp",
        "duration",
        "status",
        "traceId",
        "server",
    ] {
        assert!(v.get(k).is_some(), "{what}: envelope lacks {k}: {v}");
    }
    assert_eq!(v["status"].as_u64(), Some(u64::from(status)), "{what}");
    if status >= 400 {
        assert_eq!(v["successful"], false, "{what}");
        assert!(
            v["error"]["code"].is_string() && v["error"]["message"].is_string(),
            "{what}: {v}"
        );
    }
}

#[tokio::test]
async fn random_requests_never_5xx_always_envelope_and_refusals_change_nothing() {
    let app = TestApp::start().await;
    // Something to hit: a cluster with a server, and a task on it.
    let (cluster, server, _host) = app.one_server("RUNNING").await;
    app.post(&format!(
        "/api/v2/ob/clusters/{cluster}/servers/{server}/stop"
    ))
    .await
    .ok();
    let seed: u64 = std::env::var("TASKD_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x7a5d);
    let rounds: usize = std::env::var("TASKD_FUZZ_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let mut r = StdRng::seed_from_u64(seed);
    let mut statuses: std::collections::BTreeMap<u16, usize> = Default::default();
    let methods = ["GET", "POST", "PUT", "DELETE", "PATCH"];
    let content_types = [
        "application/json",
        "text/plain",
        "application/json; charset=latin1",
        "multipart/form-data",
        "",
    ];
    for round in 0..rounds {
        let ids = [cluster.to_string(), server.to_string(), "1".into()];
        let mut path = pick(&mut r, TEMPLATES).to_string();
        for hole in ["{a}", "{b}"] {
            let v = if r.gen_bool(0.5) {
                pick(&mut r, &ids).clone()
            } else {
                pick(&mut r, NASTY).to_string()
            };
            path = path.replace(hole, &v);
        }
        let q = random_query(&mut r);
        if !q.is_empty() {
            path = format!("{path}?{q}");
        }
        let natural = if [
            "/retry",
            "/rollback",
            "/skip",
            "/cancel",
            "/restart",
            "/start",
            "/stop",
        ]
        .iter()
        .any(|a| path.split('?').next().unwrap_or("").ends_with(a))
        {
            "POST"
        } else {
            "GET"
        };
        let method = if r.gen_bool(0.75) {
            natural
        } else {
            *pick(&mut r, &methods)
        };
        let body = random_body(&mut r);
        let ct = *pick(&mut r, &content_types);
        let trace = if r.gen_bool(0.3) {
            Some(
                pick(
                    &mut r,
                    &[
                        "x".repeat(500),
                        "a b\tc".into(),
                        "ok-trace".into(),
                        "é".into(),
                    ],
                )
                .clone(),
            )
        } else {
            None
        };
        let idem = if r.gen_bool(0.2) {
            Some(
                pick(
                    &mut r,
                    &["k".repeat(1000), "'; drop".into(), "key-1".into()],
                )
                .clone(),
            )
        } else {
            None
        };
        let what = format!("round {round}: {method} {path}");
        let before = fingerprint(&app).await;

        // Raw HTTP over TCP, so invalid UTF-8 and odd bytes go through as is.
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            app.addr
        )
        .into_bytes();
        if !ct.is_empty() {
            req.extend(format!("Content-Type: {ct}\r\n").bytes());
        }
        if let Some(t) = &trace {
            req.extend(b"X-Trace-Id: ");
            req.extend(t.as_bytes());
            req.extend(b"\r\n");
        }
        // Mostly as the admin, so requests reach the handlers; sometimes
        // anonymous or with a mangled header.
        match r.gen_range(0..10) {
            0 => {}
            1 => req.extend(b"Authorization: Basic %%%not-base64\r\n"),
            _ => {
                req.extend(b"Authorization: ");
                req.extend(app.admin.to_header().as_bytes());
                req.extend(b"\r\n");
            }
        }
        if let Some(k) = &idem {
            req.extend(format!("Idempotency-Key: {k}\r\n").bytes());
        }
        if r.gen_bool(0.05) {
            req.extend(b"X-Bad: \xff\xfe\r\n");
        }
        let body = body.unwrap_or_default();
        req.extend(format!("Content-Length: {}\r\n\r\n", body.len()).bytes());
        req.extend(&body);
        let mut sock = tokio::net::TcpStream::connect(&app.addr)
            .await
            .expect("connect");
        // The server may answer and close before the whole body is sent.
        let _ = sock.write_all(&req).await;
        let mut resp = Vec::new();
        let _ = sock.read_to_end(&mut resp).await;
        let text = String::from_utf8_lossy(&resp).to_string();
        let status: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{what}: no status line in {text:?}"));
        let body_start = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| i + 4)
            .unwrap_or(resp.len());
        let mut payload = resp[body_start..].to_vec();
        if text
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            payload = dechunk(&payload);
        }
        *statuses.entry(status).or_default() += 1;
        if status == 400 && payload.is_empty() {
            // hyper refused the request line or headers before any handler
            // (e.g. bytes that are not a valid header); there is no route to
            // envelope. Nothing may have changed.
        } else {
            check_envelope(&what, status, &payload);
        }
        if status >= 300 {
            assert_eq!(
                before,
                fingerprint(&app).await,
                "{what}: a refused request changed the database"
            );
        }
    }
    println!("answers by status: {statuses:?}");
    assert!(
        statuses.get(&200).copied().unwrap_or(0) > rounds / 20,
        "the walk reaches the handlers: {statuses:?}"
    );
}

fn dechunk(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let Some(nl) = b[i..].windows(2).position(|w| w == b"\r\n") else {
            break;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[i..i + nl]).trim(), 16).unwrap_or(0);
        i += nl + 2;
        if size == 0 || i + size > b.len() {
            break;
        }
        out.extend(&b[i..i + size]);
        i += size + 2;
    }
    out
}

#[tokio::test]
async fn a_nul_character_is_the_callers_mistake_not_a_500() {
    let app = TestApp::start().await;
    let a = app.get("/api/v2/tasks/instances?creator=%00").await;
    a.assert_error(400, "ILLEGAL_ARGUMENT");
    let a = app
        .post_json(
            "/api/v2/compute/hosts",
            &json!({"name": "nul\u{0}host", "ip": "127.0.0.1", "agentUrl": "http://127.0.0.1:1"}),
        )
        .await;
    assert_eq!(a.status.as_u16(), 400, "{:#}", a.body);
    let hosts: i64 = sqlx::query_scalar("select count(*) from host")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(hosts, 0);
}
