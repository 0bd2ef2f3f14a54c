//! Authentication and permissions over real HTTP against a real database:
//! every route refuses anonymous callers and wrong passwords with 401 and a
//! Basic challenge, each role admits exactly its routes (403 elsewhere),
//! cluster-limited managers, the creator of tasks, the probes and
//! `/metrics`, the failed-login throttle, the timing of unknown users,
//! user management over the API, credentials kept out of the logs, and the
//! `taskd user` and `taskd serve` bootstrap commands as real processes.

use crate::app::{client_for, creds, Answer, TestApp, ADMIN};
use crate::support::routes::{method_of, ROUTES};
use crate::support::{wait_for, TestDb};
use reqwest::Method;
use serde_json::{json, Value};
use std::io::Write as _;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use taskd::auth::{AuthConfig, Authenticator, Credentials, Role};

/// Routes that need no credentials (by default).
const OPEN: &[&str] = &["/healthz", "/readyz", "/metrics", "/api/v2/openapi.json"];

/// A config whose throttle never trips, for tests that fail on purpose.
fn lenient() -> AuthConfig {
    AuthConfig {
        max_failures: 10_000,
        ..AuthConfig::default()
    }
}

/// A route of [`ROUTES`] with every parameter set to 1.
fn concrete(path: &str) -> String {
    path.replace("{id}", "1")
        .replace("{serverId}", "1")
        .replace("{hostId}", "1")
        .replace("{taskInstanceId}", "1")
        .replace("{subtaskInstanceId}", "1")
}

/// The authenticated routes: every route but the probes and `/metrics`.
fn protected() -> impl Iterator<Item = (Method, &'static str)> {
    ROUTES
        .iter()
        .filter(|(_, path)| !OPEN.contains(path))
        .map(|(m, p)| (method_of(m), *p))
}

#[track_caller]
fn assert_challenge(a: &Answer, what: &str) {
    a.assert_error(401, "UNAUTHORIZED");
    assert_eq!(
        a.headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Basic realm=\"taskd\""),
        "{what}: {:#}",
        a.body
    );
    assert!(a.body["traceId"].is_string(), "{what}: in the envelope");
}

// ---------------------------------------------------------------- 401

#[tokio::test]
async fn every_route_refuses_anonymous_callers_and_wrong_passwords() {
    let app = TestApp::start_with(lenient()).await;
    let wrong = creds(ADMIN, "not-the-password");
    let stranger = creds("nobody", "whatever-password");
    let mut checked = 0;
    for (method, path) in protected() {
        let url = concrete(path);
        let what = format!("{method} {path}");
        let a = app.request_as(None, method.clone(), &url).await;
        assert_challenge(&a, &format!("anonymous {what}"));
        assert!(
            a.body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("authentication is required")),
            "{what}: {:#}",
            a.body
        );
        let a = app.request_as(Some(&wrong), method.clone(), &url).await;
        assert_challenge(&a, &format!("wrong password {what}"));
        let a = app.request_as(Some(&stranger), method.clone(), &url).await;
        assert_challenge(&a, &format!("unknown user {what}"));
        // Another scheme, or unreadable Basic credentials.
        for header in ["Bearer abc", "Basic !!!", "Basic YWRtaW4="] {
            let a = app
                .send(
                    client_for(None)
                        .request(method.clone(), app.url(&url))
                        .header("Authorization", header),
                )
                .await;
            assert_challenge(&a, &format!("{header:?} {what}"));
        }
        checked += 1;
    }
    assert_eq!(checked, ROUTES.len() - OPEN.len());
    // Nothing was created by the refused writes.
    assert_eq!(app.task_count().await, 0);
    let users: i64 = sqlx::query_scalar("select count(*) from iam_user")
        .fetch_one(&app.db.pool)
        .await
        .expect("count users");
    assert_eq!(users, 1, "only the admin");
    // A wrong method on an API route is not answered before the caller is
    // known; only a path that is no route at all is a plain 404.
    let a = app
        .request_as(None, Method::DELETE, "/api/v2/tasks/instances")
        .await;
    assert_challenge(&a, "anonymous DELETE /api/v2/tasks/instances");
    app.request(Method::DELETE, "/api/v2/tasks/instances")
        .await
        .assert_error(405, "METHOD_NOT_ALLOWED");
    app.request_as(None, Method::GET, "/no/such/route")
        .await
        .assert_error(404, "NOT_FOUND");
    // The admin itself is let through everywhere (not 401, not 403).
    for (method, path) in protected() {
        let a = app.request(method.clone(), &concrete(path)).await;
        assert!(
            ![401, 403].contains(&a.status.as_u16()),
            "admin {method} {path}: {:#}",
            a.body
        );
    }
}

// ---------------------------------------------------------------- 403

/// The roles (other than ADMIN, which is admitted everywhere) a route
/// admits. Every route must be listed: a new route fails here until its
/// permission is decided.
fn admitted(method: &Method, path: &str) -> Vec<Role> {
    use Role::*;
    let all = vec![ClusterManager, HostManager, TaskViewer, TaskManager];
    let get = *method == Method::GET;
    match path {
        p if p.starts_with("/api/v2/ob/clusters/{id}/servers/{serverId}/") => {
            vec![ClusterManager]
        }
        p if p == "/api/v2/ob/clusters/{id}/restart"
            || p.starts_with("/api/v2/ob/clusters/{id}/zones/{zoneName}/") =>
        {
            vec![ClusterManager]
        }
        p if p.ends_with("/agent/restart") => vec![HostManager],
        p if p.starts_with("/api/v2/tasks/") && get => vec![TaskViewer],
        p if p.starts_with("/api/v2/tasks/") => vec![TaskManager],
        "/api/v2/compute/hosts"
        | "/api/v2/compute/hosts/{id}"
        | "/api/v2/ob/clusters"
        | "/api/v2/ob/clusters/{id}"
        | "/api/v2/ob/clusters/{id}/servers"
            if get =>
        {
            all
        }
        "/api/v2/compute/hosts" | "/api/v2/ob/clusters" => vec![],
        p if p.starts_with("/api/v2/iam/") => vec![],
        other => panic!("{method} {other}: decide which roles this route admits"),
    }
}

#[tokio::test]
async fn each_role_admits_exactly_its_routes() {
    let app = TestApp::start().await;
    let mut users = vec![(Role::Admin, app.admin.clone())];
    for role in Role::ALL.iter().filter(|r| **r != Role::Admin) {
        let name = role.as_str().to_ascii_lowercase().replace('_', "-");
        let (_, c) = app.add_user(&name, json!([{"role": role}])).await;
        users.push((*role, c));
    }
    let mut table = Vec::new();
    for (method, path) in protected() {
        let roles = admitted(&method, path);
        for (role, c) in &users {
            let a = app
                .request_as(Some(c), method.clone(), &concrete(path))
                .await;
            let expect_admit = *role == Role::Admin || roles.contains(role);
            if expect_admit {
                assert!(
                    ![401, 403].contains(&a.status.as_u16()),
                    "{role} must reach {method} {path}: {:#}",
                    a.body
                );
            } else {
                a.assert_error(403, "FORBIDDEN");
                assert!(
                    a.body["error"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("ADMIN")),
                    "the message names the roles that would do: {:#}",
                    a.body
                );
            }
            table.push(format!(
                "{role:<15} {:<6} {path:<80} {}",
                method.as_str(),
                a.status.as_u16()
            ));
        }
    }
    println!("{}", table.join("\n"));
    assert_eq!(table.len(), (ROUTES.len() - OPEN.len()) * Role::ALL.len());
    // The refused writes created nothing.
    assert_eq!(app.task_count().await, 0);
}

// ---------------------------------------------------------------- scope

#[tokio::test]
async fn a_cluster_limited_manager_operates_only_its_clusters() {
    let app = TestApp::start().await;
    let (c1, s1, _) = app.one_server("RUNNING").await;
    let host_b = app.add_host("host-b").await;
    let zerg = app
        .add_cluster("zerg", &[("zone1", host_b, "RUNNING")])
        .await;
    let c2 = zerg["id"].as_i64().expect("cluster id");
    let s2 = zerg["zones"][0]["servers"][0]["id"]
        .as_i64()
        .expect("server id");
    let (ops_id, ops) = app
        .add_user(
            "ops1",
            json!([{"role": "CLUSTER_MANAGER", "clusterIds": [c1]}, {"role": "TASK_VIEWER"}]),
        )
        .await;
    let op = |verb: &str, c: i64, s: i64| format!("/api/v2/ob/clusters/{c}/servers/{s}/{verb}");

    // The other cluster: 403, whatever the operation, and nothing created.
    for verb in ["restart", "stop", "start"] {
        let a = app
            .request_as(Some(&ops), Method::POST, &op(verb, c2, s2))
            .await;
        a.assert_error(403, "FORBIDDEN");
        assert!(
            a.body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("cluster {c2}"))),
            "{:#}",
            a.body
        );
    }
    // Its own cluster's path cannot reach the other cluster's server.
    let a = app
        .request_as(Some(&ops), Method::POST, &op("restart", c1, s2))
        .await;
    a.assert_error(404, "SERVER_NOT_FOUND");
    // A cluster that does not exist is not in its list either.
    let a = app
        .request_as(Some(&ops), Method::POST, &op("restart", 999, s1))
        .await;
    a.assert_error(403, "FORBIDDEN");
    assert_eq!(app.task_count().await, 0);

    // Its own cluster: the operation runs, under its name.
    let a = app
        .request_as(Some(&ops), Method::POST, &op("restart", c1, s1))
        .await;
    let task = a.ok().clone();
    assert_eq!(task["creator"], "ops1");
    assert_eq!(task["clusterId"], c1);

    // An Idempotency-Key of the other cluster's task is not replayed
    // through its own cluster's path.
    let a = app
        .send(
            app.client
                .post(app.url(&op("restart", c2, s2)))
                .header("Idempotency-Key", "zerg-1"),
        )
        .await;
    a.ok();
    let a = app
        .send(
            client_for(Some(&ops))
                .post(app.url(&op("restart", c1, s2)))
                .header("Idempotency-Key", "zerg-1"),
        )
        .await;
    a.assert_error(422, "IDEMPOTENCY_KEY_REUSED");

    // Roles are read on every request: moving the grant moves the right.
    let a = app
        .send(
            app.client
                .put(app.url(&format!("/api/v2/iam/users/{ops_id}/roles")))
                .json(&json!({"roles": [{"role": "CLUSTER_MANAGER", "clusterIds": [c2]}]})),
        )
        .await;
    assert_eq!(
        a.ok()["roles"],
        json!([{"role": "CLUSTER_MANAGER", "clusterIds": [c2]}])
    );
    let a = app
        .request_as(Some(&ops), Method::POST, &op("stop", c1, s1))
        .await;
    a.assert_error(403, "FORBIDDEN");
    let a = app
        .request_as(Some(&ops), Method::GET, "/api/v2/tasks/instances")
        .await;
    a.assert_error(403, "FORBIDDEN");
    // Cluster 2 is now its own (its server is busy with the admin's task).
    let a = app
        .request_as(Some(&ops), Method::POST, &op("restart", c2, s2))
        .await;
    a.assert_error(409, "TARGET_BUSY");
}

#[tokio::test]
async fn the_creator_is_the_authenticated_users_name() {
    let app = TestApp::start().await;
    let (cluster, server, host) = app.one_server("RUNNING").await;
    let (_, alice) = app
        .add_user(
            "alice",
            json!([{"role": "CLUSTER_MANAGER"}, {"role": "TASK_VIEWER"}]),
        )
        .await;
    let (_, bob) = app.add_user("bob", json!([{"role": "HOST_MANAGER"}])).await;
    let a = app
        .request_as(
            Some(&alice),
            Method::POST,
            &format!("/api/v2/ob/clusters/{cluster}/servers/{server}/restart"),
        )
        .await;
    let restart = a.ok()["id"].as_i64().expect("task id");
    assert_eq!(a.data()["creator"], "alice");
    let a = app
        .request_as(
            Some(&bob),
            Method::POST,
            &format!("/compute/hosts/{host}/agent/restart"),
        )
        .await;
    let agent = a.ok()["id"].as_i64().expect("task id");
    assert_eq!(a.data()["creator"], "bob");
    // As stored, and as the list filters it.
    for (id, name) in [(restart, "alice"), (agent, "bob")] {
        let row = taskd::store::task::get(&app.db.pool, taskd::model::TaskId(id))
            .await
            .expect("read")
            .expect("stored");
        assert_eq!(row.creator, name);
        let a = app
            .request_as(
                Some(&alice),
                Method::GET,
                &format!("/api/v2/tasks/instances?creator={name}"),
            )
            .await;
        let ids: Vec<i64> = a.ok()["contents"]
            .as_array()
            .expect("contents")
            .iter()
            .filter_map(|t| t["id"].as_i64())
            .collect();
        assert_eq!(ids, [id]);
    }
}

// ---------------------------------------------------------------- open routes

#[tokio::test]
async fn probes_are_open_and_metrics_open_by_default() {
    let app = TestApp::start().await;
    for path in OPEN {
        let a = app.request_as(None, Method::GET, path).await;
        assert_eq!(a.status.as_u16(), 200, "{path}: {:#}", a.body);
        assert!(a.headers.get("www-authenticate").is_none(), "{path}");
    }
    // Wrong credentials do not matter there either.
    let wrong = creds(ADMIN, "not-the-password");
    let a = app.request_as(Some(&wrong), Method::GET, "/healthz").await;
    assert_eq!(a.status.as_u16(), 200);
}

#[tokio::test]
async fn metrics_need_a_user_with_the_flag() {
    let app = TestApp::start_with(AuthConfig {
        metrics_auth: true,
        ..AuthConfig::default()
    })
    .await;
    let a = app.request_as(None, Method::GET, "/metrics").await;
    assert_challenge(&a, "anonymous /metrics");
    let wrong = creds(ADMIN, "not-the-password");
    let a = app.request_as(Some(&wrong), Method::GET, "/metrics").await;
    assert_challenge(&a, "wrong password /metrics");
    // Any role will do.
    let (_, viewer) = app
        .add_user("viewer", json!([{"role": "TASK_VIEWER"}]))
        .await;
    let resp = client_for(Some(&viewer))
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.text().await.expect("text");
    assert!(text.contains("taskd_http_requests_total"), "{text}");
    // The probes stay open.
    for path in ["/healthz", "/readyz"] {
        let a = app.request_as(None, Method::GET, path).await;
        assert_eq!(a.status.as_u16(), 200, "{path}");
    }
}

// ---------------------------------------------------------------- throttle

/// A client whose connections come from `ip` (any 127.0.0.0/8 address is
/// the loopback on Linux).
fn client_from(ip: [u8; 4], c: &Credentials) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        c.to_header().parse().expect("a header"),
    );
    reqwest::Client::builder()
        .local_address(IpAddr::from(ip))
        .default_headers(headers)
        .build()
        .expect("a client")
}

#[tokio::test]
async fn repeated_failures_are_slowed_down_but_the_right_password_gets_through() {
    // 5 failures in 3 s: a slowed pair gets one verified attempt per 600 ms.
    let window = Duration::from_secs(3);
    let app = TestApp::start_with(AuthConfig {
        max_failures: 5,
        failure_window: window,
        ..AuthConfig::default()
    })
    .await;
    let path = "/api/v2/compute/hosts";
    let (_, other) = app
        .add_user("viewer-behind-the-nat", json!([{"role": "TASK_VIEWER"}]))
        .await;
    let wrong = creds(ADMIN, "not-the-password");
    let started = Instant::now();
    for i in 0..5 {
        let a = app.request_as(Some(&wrong), Method::GET, path).await;
        assert_challenge(&a, &format!("failure {i}"));
    }
    assert!(
        started.elapsed() < window,
        "the failures must fall in one window"
    );
    let assert_throttled = |a: &crate::app::Answer, what: &str| {
        a.assert_error(429, "TOO_MANY_REQUESTS");
        let retry: u64 = a
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{what}: a Retry-After in seconds"));
        assert!((1..=3).contains(&retry), "{what}: Retry-After {retry}");
    };
    // The guesser: a wrong password is now answered 429.
    let a = app.request_as(Some(&wrong), Method::GET, path).await;
    assert_throttled(&a, "the sixth wrong password");
    // The right password from the same address still gets through, in
    // its turn.
    app.get(path).await.ok();
    // A burst of guesses: at most one waits for its turn, the rest are
    // refused at once.
    let burst =
        futures::future::join_all((0..4).map(|_| app.request_as(Some(&wrong), Method::GET, path)))
            .await;
    for (i, a) in burst.iter().enumerate() {
        assert_throttled(a, &format!("guess {i} of the burst"));
    }
    // Another user from the same address is not slowed at all.
    let a = app.request_as(Some(&other), Method::GET, path).await;
    a.ok();
    // Nor is the same user from another address.
    let elsewhere = client_from([127, 0, 0, 2], &app.admin);
    let a = app.send(elsewhere.get(app.url(path))).await;
    a.ok();
    // No credentials at all is not a failed login: still the 401 challenge.
    let a = app.request_as(None, Method::GET, path).await;
    assert_challenge(&a, "anonymous while throttled");
}

#[tokio::test]
async fn unknown_users_and_wrong_passwords_are_refused_alike() {
    let app = TestApp::start_with(lenient()).await;
    let path = "/api/v2/compute/hosts";
    let rounds = 5;
    let mut unknown = Vec::new();
    let mut wrong = Vec::new();
    let mut messages = Vec::new();
    for i in 0..rounds {
        // Distinct passwords: nothing may come from a cache.
        let stranger = creds(&format!("nobody{i}"), &format!("guess-{i}-password"));
        let t = Instant::now();
        let a = app.request_as(Some(&stranger), Method::GET, path).await;
        unknown.push(t.elapsed());
        assert_challenge(&a, "unknown user");
        messages.push(a.body["error"]["message"].clone());

        let bad = creds(ADMIN, &format!("guess-{i}-password"));
        let t = Instant::now();
        let a = app.request_as(Some(&bad), Method::GET, path).await;
        wrong.push(t.elapsed());
        assert_challenge(&a, "wrong password");
        messages.push(a.body["error"]["message"].clone());
    }
    // One message for both: the answer does not say which was wrong.
    messages.dedup();
    assert_eq!(messages, [json!("wrong user name or password")]);
    let mean = |v: &[Duration]| v.iter().sum::<Duration>() / v.len() as u32;
    println!(
        "unknown user: mean {:?} {unknown:?}\nwrong password: mean {:?} {wrong:?}",
        mean(&unknown),
        mean(&wrong)
    );
    // The right password, first verified then cached.
    let t = Instant::now();
    app.get(path).await.ok();
    let first = t.elapsed();
    let t = Instant::now();
    app.get(path).await.ok();
    println!("right password: first {first:?}, cached {:?}", t.elapsed());
}

// ---------------------------------------------------------------- users

#[tokio::test]
async fn admins_manage_users_and_roles_without_ever_seeing_a_password() {
    let app = TestApp::start().await;
    let (cluster, _, _) = app.one_server("RUNNING").await;
    let users = "/api/v2/iam/users";
    let body = |name: &str, password: &str, roles: Value| json!({"name": name, "password": password, "roles": roles});

    // Create, read, list: no password or hash anywhere.
    let a = app
        .post_json(
            users,
            &body(
                "carol",
                "carol-password-1",
                json!([{"role": "TASK_VIEWER"}, {"role": "CLUSTER_MANAGER", "clusterIds": [cluster]}]),
            ),
        )
        .await;
    let carol = a.ok().clone();
    let id = carol["id"].as_i64().expect("id");
    assert_eq!(carol["name"], "carol");
    assert_eq!(
        carol["roles"],
        json!([{"role": "CLUSTER_MANAGER", "clusterIds": [cluster]}, {"role": "TASK_VIEWER"}])
    );
    for v in [
        &carol,
        &app.get(&format!("{users}/{id}")).await.ok().clone(),
    ] {
        assert!(v.get("password").is_none() && v.get("passwordHash").is_none());
        assert!(!v.to_string().contains("argon2"), "{v:#}");
    }
    let list = app.get(users).await.ok().clone();
    assert_eq!(list["page"]["totalElements"], 2);
    assert_eq!(list["contents"][0]["name"], ADMIN);
    assert!(!list.to_string().contains("argon2"));
    let stored: String = sqlx::query_scalar("select password_hash from iam_user where id = $1")
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .expect("stored");
    assert!(stored.starts_with("$argon2id$v=19$"), "{stored}");

    // Refusals name the field; passwords are never echoed.
    let cases = [
        (
            body(
                "carol",
                "another-password",
                json!([{"role": "TASK_VIEWER"}]),
            ),
            409,
            "DUPLICATE",
            "name",
        ),
        (
            body(
                "bad:name",
                "some-password",
                json!([{"role": "TASK_VIEWER"}]),
            ),
            400,
            "ILLEGAL_ARGUMENT",
            "name",
        ),
        (
            body("dave", "short", json!([{"role": "TASK_VIEWER"}])),
            400,
            "ILLEGAL_ARGUMENT",
            "password",
        ),
        (
            body("dave", "some-password", json!([])),
            400,
            "ILLEGAL_ARGUMENT",
            "roles",
        ),
        (
            body("dave", "some-password", json!([{"role": "ROOT"}])),
            400,
            "ILLEGAL_ARGUMENT",
            "roles[0].role",
        ),
        (
            body(
                "dave",
                "some-password",
                json!([{"role": "TASK_VIEWER", "clusterIds": [1]}]),
            ),
            400,
            "ILLEGAL_ARGUMENT",
            "roles[0].clusterIds",
        ),
        (
            body(
                "dave",
                "some-password",
                json!([{"role": "CLUSTER_MANAGER", "clusterIds": [999]}]),
            ),
            400,
            "ILLEGAL_ARGUMENT",
            "roles[0].clusterIds",
        ),
        (
            body(
                "dave",
                "some-password",
                json!([{"role": "CLUSTER_MANAGER", "clusterIds": []}]),
            ),
            400,
            "ILLEGAL_ARGUMENT",
            "roles[0].clusterIds",
        ),
        (
            body(
                "dave",
                "some-password",
                json!([{"role": "TASK_VIEWER"}, {"role": "TASK_VIEWER"}]),
            ),
            400,
            "ILLEGAL_ARGUMENT",
            "roles[1].role",
        ),
    ];
    for (b, status, code, target) in cases {
        let a = app.post_json(users, &b).await;
        a.assert_error(status, code);
        assert_eq!(a.error_target(), target, "{:#}", a.body);
        let password = b["password"].as_str().unwrap_or_default();
        assert!(!a.body.to_string().contains(password), "{:#}", a.body);
    }
    let a = app.get(users).await;
    assert_eq!(a.ok()["page"]["totalElements"], 2, "nothing was created");

    // A password change takes effect at once, cached or not.
    let old = creds("carol", "carol-password-1");
    app.request_as(Some(&old), Method::GET, "/api/v2/tasks/instances")
        .await
        .ok();
    let a = app
        .put_json(
            &format!("{users}/{id}/password"),
            &json!({"password": "carol-password-2"}),
        )
        .await;
    a.ok();
    let a = app
        .request_as(Some(&old), Method::GET, "/api/v2/tasks/instances")
        .await;
    assert_challenge(&a, "the old password");
    let new = creds("carol", "carol-password-2");
    app.request_as(Some(&new), Method::GET, "/api/v2/tasks/instances")
        .await
        .ok();

    // Roles are replaced whole.
    let a = app
        .put_json(
            &format!("{users}/{id}/roles"),
            &json!({"roles": [{"role": "TASK_MANAGER"}]}),
        )
        .await;
    assert_eq!(a.ok()["roles"], json!([{"role": "TASK_MANAGER"}]));
    app.request_as(Some(&new), Method::GET, "/api/v2/tasks/instances")
        .await
        .assert_error(403, "FORBIDDEN");
    let a = app
        .put_json(&format!("{users}/{id}/roles"), &json!({"roles": []}))
        .await;
    a.assert_invalid("roles");

    // The last ADMIN is kept.
    let admin_id = list["contents"][0]["id"].as_i64().expect("admin id");
    let a = app
        .request(Method::DELETE, &format!("{users}/{admin_id}"))
        .await;
    a.assert_error(409, "CONFLICT");
    let a = app
        .put_json(
            &format!("{users}/{admin_id}/roles"),
            &json!({"roles": [{"role": "TASK_VIEWER"}]}),
        )
        .await;
    a.assert_error(409, "CONFLICT");
    // With a second ADMIN, the first may step down.
    let a = app
        .put_json(
            &format!("{users}/{id}/roles"),
            &json!({"roles": [{"role": "ADMIN"}]}),
        )
        .await;
    a.ok();
    let a = app
        .send(
            client_for(Some(&new))
                .put(app.url(&format!("{users}/{admin_id}/roles")))
                .json(&json!({"roles": [{"role": "TASK_VIEWER"}]})),
        )
        .await;
    assert_eq!(a.ok()["roles"], json!([{"role": "TASK_VIEWER"}]));
    app.get(users).await.assert_error(403, "FORBIDDEN");

    // Deleting a user locks it out at once; unknown users are 404.
    let a = app
        .send(client_for(Some(&new)).delete(app.url(&format!("{users}/{admin_id}"))))
        .await;
    a.ok();
    assert_challenge(&app.get("/api/v2/compute/hosts").await, "a deleted user");
    let a = app
        .send(client_for(Some(&new)).get(app.url(&format!("{users}/{admin_id}"))))
        .await;
    a.assert_error(404, "USER_NOT_FOUND");
    let a = app
        .send(client_for(Some(&new)).get(app.url(&format!("{users}/abc"))))
        .await;
    a.assert_invalid("id");

    // The roles, with what they allow.
    let a = app
        .send(client_for(Some(&new)).get(app.url("/api/v2/iam/roles")))
        .await;
    let roles: Vec<&str> = a
        .ok()
        .as_array()
        .expect("roles")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(
        roles,
        [
            "ADMIN",
            "CLUSTER_MANAGER",
            "HOST_MANAGER",
            "TASK_VIEWER",
            "TASK_MANAGER"
        ]
    );
    assert_eq!(
        a.data()[1]["permissions"],
        json!(["INVENTORY_READ", "SERVER_OPERATE"])
    );
    assert_eq!(a.data()[1]["clusterScoped"], true);
}

// ---------------------------------------------------------------- commands

/// Runs `taskd` with these arguments, environment and standard input;
/// returns (success, stdout, stderr).
fn taskd(args: &[&str], env: &[(&str, &str)], stdin: &str) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_taskd"));
    cmd.args(args)
        .env_remove("TASKD_USER_PASSWORD")
        .env_remove("TASKD_USER_ROLES")
        .env_remove("TASKD_USER_NAME")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run taskd");
    if let Some(mut input) = child.stdin.take() {
        // A command that fails before reading its input may have closed it.
        let _ = input.write_all(stdin.as_bytes());
    }
    let out = child.wait_with_output().expect("taskd ends");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn verify(db: &TestDb, c: &Credentials) -> taskd::auth::Result<taskd::auth::Principal> {
    let auth = Authenticator::new(db.pool.clone(), lenient());
    auth.verify(c, IpAddr::from([127, 0, 0, 1])).await
}

#[tokio::test]
async fn taskd_user_add_and_passwd_work_against_the_database() {
    let db = TestDb::new().await;
    let url = db.url.as_str();
    let env = [("DATABASE_URL", url)];

    // From standard input, with several roles.
    let (ok, out, err) = taskd(
        &[
            "user",
            "add",
            "--name",
            "root",
            "--password-stdin",
            "--role",
            "ADMIN",
        ],
        &env,
        "root-password-1\n",
    );
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("added user \"root\""), "{out}");
    assert_eq!(out.lines().count(), 1, "one line: {out}");
    let root = verify(&db, &creds("root", "root-password-1"))
        .await
        .expect("the password without its newline");
    assert!(root.has_role(Role::Admin));

    // From the environment, roles separated by spaces.
    let (ok, out, err) = taskd(
        &["user", "add"],
        &[
            ("DATABASE_URL", url),
            ("TASKD_USER_NAME", "viewer"),
            ("TASKD_USER_PASSWORD", "viewer-password"),
            ("TASKD_USER_ROLES", "TASK_VIEWER TASK_MANAGER"),
        ],
        "",
    );
    assert!(ok, "{out}\n{err}");
    let viewer = verify(&db, &creds("viewer", "viewer-password"))
        .await
        .expect("verified");
    assert!(viewer.has_role(Role::TaskViewer) && viewer.has_role(Role::TaskManager));
    assert!(!viewer.has_role(Role::Admin));
    assert!(!err.contains("viewer-password") && !out.contains("viewer-password"));

    // Refusals: an existing name, a short password, no password, both
    // sources, an unknown role, an unknown cluster.
    let refused: &[(&[&str], &str, &str)] = &[
        (
            &[
                "--name",
                "root",
                "--password",
                "other-password",
                "--role",
                "ADMIN",
            ],
            "",
            "already exists",
        ),
        (
            &["--name", "eve", "--password", "short", "--role", "ADMIN"],
            "",
            "at least 8",
        ),
        (
            &["--name", "eve", "--role", "ADMIN"],
            "",
            "--password-stdin",
        ),
        (
            &[
                "--name",
                "eve",
                "--password",
                "eve-password",
                "--password-stdin",
                "--role",
                "ADMIN",
            ],
            "eve-password\n",
            "not both",
        ),
        (
            &[
                "--name",
                "eve",
                "--password",
                "eve-password",
                "--role",
                "ROOT",
            ],
            "",
            "unknown role",
        ),
        (
            &[
                "--name",
                "eve",
                "--password",
                "eve-password",
                "--role",
                "CLUSTER_MANAGER:42",
            ],
            "",
            "no cluster has id 42",
        ),
    ];
    for (args, stdin, message) in refused {
        let mut all = vec!["user", "add"];
        all.extend_from_slice(args);
        let (ok, out, err) = taskd(&all, &env, stdin);
        assert!(!ok, "{args:?} must fail: {out}");
        assert!(err.contains(message), "{args:?}: {err}");
        assert!(
            !err.contains("other-password") && !err.contains("eve-password"),
            "{err}"
        );
    }
    let users: i64 = sqlx::query_scalar("select count(*) from iam_user")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(users, 2);

    // passwd: the new password works, the old one does not.
    let (ok, out, err) = taskd(
        &["user", "passwd", "--name", "root", "--password-stdin"],
        &env,
        "root-password-2\r\n",
    );
    assert!(ok, "{out}\n{err}");
    assert!(verify(&db, &creds("root", "root-password-2")).await.is_ok());
    assert!(verify(&db, &creds("root", "root-password-1"))
        .await
        .is_err());
    let (ok, _, err) = taskd(
        &[
            "user",
            "passwd",
            "--name",
            "nobody",
            "--password",
            "some-password",
        ],
        &env,
        "",
    );
    assert!(!ok && err.contains("does not exist"), "{err}");
}

/// `taskd serve` as a real process on a free port, logging JSON at
/// `RUST_LOG` to a pipe that a thread keeps reading.
struct Served {
    child: std::process::Child,
    addr: String,
    reader: std::thread::JoinHandle<String>,
}

impl Served {
    async fn start(db: &TestDb, env: &[(&str, &str)]) -> Served {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_taskd"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--workers", "0"])
            .env("DATABASE_URL", &db.url)
            .env("TASKD_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start taskd serve");
        let stdout = child.stderr.take().expect("stderr: the logs");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            let mut all = String::new();
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["message"] == "HTTP API listening" {
                        let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_string());
                    }
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let addr = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
            .await
            .expect("join")
            .expect("taskd serve logs its address");
        Served {
            child,
            addr,
            reader,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops it with SIGTERM; returns everything it logged.
    async fn stop(self) -> String {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid, which has not been reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let mut child = self.child;
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .expect("join")
            .expect("taskd serve ends");
        assert!(status.success(), "taskd serve exited with {status}");
        self.reader.join().expect("log reader")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taskd_serve_creates_the_first_admin_from_the_environment() {
    let db = TestDb::new().await;
    let password = taskd::auth::generate_password();
    let served = Served::start(
        &db,
        &[
            ("TASKD_ADMIN_USER", "boss"),
            ("TASKD_ADMIN_PASSWORD", &password),
        ],
    )
    .await;
    let url = served.url("/api/v2/compute/hosts");
    let boss = creds("boss", &password);
    let resp = wait_for("the API", Duration::from_secs(30), || async {
        client_for(Some(&boss)).get(&url).send().await.ok()
    })
    .await;
    assert_eq!(resp.status().as_u16(), 200);
    let resp = client_for(None).get(&url).send().await.expect("an answer");
    assert_eq!(resp.status().as_u16(), 401);
    let logs = served.stop().await;
    assert!(logs.contains("user added"), "{logs}");
    assert!(!logs.contains(&password), "the password is not logged");

    // A second start leaves the existing admin as it is: the new password
    // is not applied.
    let served = Served::start(
        &db,
        &[
            ("TASKD_ADMIN_USER", "boss"),
            ("TASKD_ADMIN_PASSWORD", "another-password"),
        ],
    )
    .await;
    let url = served.url("/api/v2/compute/hosts");
    let resp = client_for(Some(&boss))
        .get(&url)
        .send()
        .await
        .expect("an answer");
    assert_eq!(resp.status().as_u16(), 200);
    let other = creds("boss", "another-password");
    let resp = client_for(Some(&other))
        .get(&url)
        .send()
        .await
        .expect("an answer");
    assert_eq!(resp.status().as_u16(), 401);
    let logs = served.stop().await;
    assert!(logs.contains("left as it is"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_reach_the_logs_even_at_trace_level() {
    let db = TestDb::new().await;
    let admin = creds("root", &taskd::auth::generate_password());
    let served = Served::start(
        &db,
        &[
            ("TASKD_ADMIN_USER", &admin.name),
            ("TASKD_ADMIN_PASSWORD", &admin.password),
            ("RUST_LOG", "trace"),
        ],
    )
    .await;
    let as_admin = client_for(Some(&admin));
    let secret = "Sup3r-Secret-Passw0rd";
    let alice = creds("alice", secret);
    let wrong = creds("alice", "Wr0ng-Secret-Passw0rd");
    let resp = wait_for("the API", Duration::from_secs(30), || async {
        as_admin
            .post(served.url("/api/v2/iam/users"))
            .json(&json!({"name": "alice", "password": secret, "roles": [{"role": "TASK_VIEWER"}]}))
            .send()
            .await
            .ok()
    })
    .await;
    assert_eq!(resp.status().as_u16(), 200);
    let tasks = served.url("/api/v2/tasks/instances");
    for (c, status) in [(&alice, 200), (&alice, 200), (&wrong, 401)] {
        let resp = client_for(Some(c))
            .get(&tasks)
            .send()
            .await
            .expect("an answer");
        assert_eq!(resp.status().as_u16(), status);
    }
    // A refused password is not echoed either.
    let resp = as_admin
        .put(served.url("/api/v2/iam/users/2/password"))
        .json(&json!({"password": "Sh0rt"}))
        .send()
        .await
        .expect("an answer");
    assert_eq!(resp.status().as_u16(), 400);
    let body = resp.text().await.expect("a body");
    assert!(!body.contains("Sh0rt"), "{body}");

    let logs = served.stop().await;
    assert!(
        logs.contains("authentication failed"),
        "the failure is logged: {logs}"
    );
    assert!(logs.contains("\"level\":\"TRACE\""), "trace level is on");
    assert!(
        logs.contains("\"user\":\"alice\""),
        "the span names the user"
    );
    for (what, needle) in [
        ("a password", secret.to_string()),
        ("a wrong password", wrong.password.clone()),
        ("a refused password", "Sh0rt".to_string()),
        ("the admin's password", admin.password.clone()),
        ("a Basic token", alice.to_header()),
        ("a Basic token", wrong.to_header()),
        ("a Basic token", admin.to_header()),
        ("a hash", "$argon2id$".to_string()),
    ] {
        let token = needle.trim_start_matches("Basic ");
        assert!(!logs.contains(token), "{what} is in the logs");
    }
    assert!(
        !logs.to_ascii_lowercase().contains("authorization"),
        "the header is not logged"
    );
}
