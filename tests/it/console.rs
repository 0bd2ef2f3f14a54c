//! The operator console: its sessions and CSRF defence over HTTP, and the
//! console itself in a real headless Chromium (see `browser`) against the
//! API, a worker and real agents (`actions::World`).

use crate::actions::World;
use crate::app::{client_for, TestApp};
use crate::browser::Browser;
use crate::support::wait_for;
use reqwest::header::{COOKIE, ORIGIN, SET_COOKIE, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;
use taskd::agent::{FaultSpec, Operation};

/// A signed-in console session as a browser holds it.
struct Session {
    cookie: String,
    csrf: String,
}

async fn sign_in(
    app: &TestApp,
    name: &str,
    password: &str,
) -> (StatusCode, Value, Option<Session>) {
    let resp = client_for(None)
        .post(app.url("/console/api/sign-in"))
        .json(&json!({"name": name, "password": password}))
        .send()
        .await
        .expect("an answer");
    let status = resp.status();
    assert!(
        resp.headers().get(WWW_AUTHENTICATE).is_none(),
        "no Basic dialog"
    );
    let cookie = resp
        .headers()
        .get(SET_COOKIE)
        .map(|v| v.to_str().expect("ascii").to_string());
    let body: Value = resp.json().await.expect("json");
    let session = cookie.map(|c| {
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(c.contains(attr), "{c} lacks {attr}");
        }
        Session {
            cookie: c.split(';').next().expect("name=value").to_string(),
            csrf: body["data"]["csrfToken"]
                .as_str()
                .expect("a token")
                .to_string(),
        }
    });
    (status, body, session)
}

/// A request with the session's cookie and, when given, a CSRF token and
/// an Origin.
async fn with_session(
    app: &TestApp,
    s: &Session,
    method: Method,
    path: &str,
    csrf: Option<&str>,
    origin: Option<&str>,
    body: Option<Value>,
) -> crate::app::Answer {
    let mut req = client_for(None)
        .request(method, app.url(path))
        .header(COOKIE, &s.cookie);
    if let Some(t) = csrf {
        req = req.header("X-CSRF-Token", t);
    }
    if let Some(o) = origin {
        req = req.header(ORIGIN, o);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    app.send(req).await
}

async fn host_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from host")
        .fetch_one(&app.db.pool)
        .await
        .expect("count hosts")
}

#[tokio::test]
async fn sessions_are_cookies_with_csrf_tokens_and_end_when_they_must() {
    let app = TestApp::start().await;
    let own_origin = app.base.clone();

    // The page and its assets need no credentials and carry a strict CSP.
    let page = client_for(None)
        .get(app.url("/console"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(page
        .text()
        .await
        .unwrap()
        .contains("/console/assets/app.js"));
    let js = client_for(None)
        .get(app.url("/console/assets/app.js"))
        .send()
        .await
        .unwrap();
    assert!(js.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    app.request_as(None, Method::GET, "/console/assets/nope.js")
        .await
        .assert_error(404, "NOT_FOUND");
    // The console's endpoints never challenge for Basic (a browser dialog).
    let a = app
        .request_as(None, Method::GET, "/console/api/session")
        .await;
    a.assert_error(401, "UNAUTHORIZED");
    assert!(a.headers.get(WWW_AUTHENTICATE).is_none());

    // Wrong password: 401 without a cookie; right one: a session.
    let (_, viewer) = app
        .add_user("viewer", json!([{"role": "TASK_VIEWER"}]))
        .await;
    let (status, body, none) = sign_in(&app, "viewer", "not-the-password").await;
    assert_eq!(
        (status, none.is_none()),
        (StatusCode::UNAUTHORIZED, true),
        "{body}"
    );
    let (status, body, s) = sign_in(&app, "viewer", &viewer.password).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let s = s.expect("a session cookie");
    assert_eq!(body["data"]["user"], "viewer");
    assert_eq!(
        body["data"]["permissions"],
        json!(["INVENTORY_READ", "TASK_READ"])
    );
    // Only a hash of the token is stored.
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("select token_hash from console_session")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    let token = s.cookie.split_once('=').unwrap().1;
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0], token.as_bytes());

    // The cookie authenticates API reads; permissions still apply.
    let list = with_session(
        &app,
        &s,
        Method::GET,
        "/api/v2/tasks/instances",
        None,
        None,
        None,
    )
    .await;
    list.ok();
    let me = with_session(
        &app,
        &s,
        Method::GET,
        "/console/api/session",
        None,
        None,
        None,
    )
    .await;
    assert_eq!(me.ok()["csrfToken"], s.csrf.as_str());
    let host = json!({"name": "h1", "ip": "127.0.0.9", "agentUrl": "http://127.0.0.9:1"});
    let a = with_session(
        &app,
        &s,
        Method::POST,
        "/api/v2/compute/hosts",
        Some(&s.csrf),
        Some(&own_origin),
        Some(host.clone()),
    )
    .await;
    a.assert_error(403, "FORBIDDEN");

    // An admin's session: a state change needs the token and this origin.
    let (_, _, admin) = sign_in(&app, &app.admin.name, &app.admin.password).await;
    let admin = admin.expect("the admin's session");
    let post_host = |csrf: Option<String>, origin: Option<String>| {
        let (app, admin, host) = (&app, &admin, host.clone());
        async move {
            with_session(
                app,
                admin,
                Method::POST,
                "/api/v2/compute/hosts",
                csrf.as_deref(),
                origin.as_deref(),
                Some(host),
            )
            .await
        }
    };
    let a = post_host(None, Some(own_origin.clone())).await;
    a.assert_error(403, "FORBIDDEN");
    assert!(a.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("X-CSRF-Token"));
    post_host(Some(s.csrf.clone()), Some(own_origin.clone()))
        .await
        .assert_error(403, "FORBIDDEN");
    post_host(Some(admin.csrf.clone()), Some("http://evil.example".into()))
        .await
        .assert_error(403, "FORBIDDEN");
    assert_eq!(host_count(&app).await, 0, "refused requests change nothing");
    post_host(Some(admin.csrf.clone()), Some(own_origin.clone()))
        .await
        .ok();
    assert_eq!(host_count(&app).await, 1);

    // Sign-out is a state change too; afterwards the cookie is worthless.
    with_session(
        &app,
        &admin,
        Method::POST,
        "/console/api/sign-out",
        None,
        None,
        None,
    )
    .await
    .assert_error(403, "FORBIDDEN");
    let out = with_session(
        &app,
        &admin,
        Method::POST,
        "/console/api/sign-out",
        Some(&admin.csrf),
        None,
        None,
    )
    .await;
    out.ok();
    assert!(out.headers[SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    with_session(
        &app,
        &admin,
        Method::GET,
        "/api/v2/tasks/instances",
        None,
        None,
        None,
    )
    .await
    .assert_error(401, "UNAUTHORIZED");

    // A changed password ends the user's sessions.
    let viewer_id: i64 = sqlx::query_scalar("select id from iam_user where name = 'viewer'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    app.put_json(
        &format!("/api/v2/iam/users/{viewer_id}/password"),
        &json!({"password": "An0ther-long-password"}),
    )
    .await
    .ok();
    with_session(
        &app,
        &s,
        Method::GET,
        "/console/api/session",
        None,
        None,
        None,
    )
    .await
    .assert_error(401, "UNAUTHORIZED");

    // So does deleting the user.
    let (status, _, s2) = sign_in(&app, "viewer", "An0ther-long-password").await;
    assert_eq!(status, StatusCode::OK);
    let s2 = s2.unwrap();
    with_session(
        &app,
        &s2,
        Method::GET,
        "/console/api/session",
        None,
        None,
        None,
    )
    .await
    .ok();
    app.request(Method::DELETE, &format!("/api/v2/iam/users/{viewer_id}"))
        .await
        .ok();
    with_session(
        &app,
        &s2,
        Method::GET,
        "/console/api/session",
        None,
        None,
        None,
    )
    .await
    .assert_error(401, "UNAUTHORIZED");

    // And time: an expired session is refused.
    let (_, _, s3) = sign_in(&app, &app.admin.name, &app.admin.password).await;
    let s3 = s3.unwrap();
    with_session(
        &app,
        &s3,
        Method::GET,
        "/console/api/session",
        None,
        None,
        None,
    )
    .await
    .ok();
    sqlx::query("update console_session set create_time = now() - interval '2 days', expires_at = now() - interval '1 second'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    with_session(
        &app,
        &s3,
        Method::GET,
        "/console/api/session",
        None,
        None,
        None,
    )
    .await
    .assert_error(401, "UNAUTHORIZED");
}

/// Controls of the page a keyboard or screen-reader user could not name:
/// inputs and selects without a label, buttons and links without text or
/// `aria-label`, DAG nodes without a label or not focusable.
async fn unlabelled(b: &Browser) -> Value {
    b.js(r#"
        const named = (e) => (e.getAttribute('aria-label') || e.textContent || '').trim() !== '';
        const bad = [];
        for (const e of document.querySelectorAll('main input, main select')) {
            if (!(e.labels && e.labels.length) && !e.getAttribute('aria-label')) bad.push(e.outerHTML);
        }
        for (const e of document.querySelectorAll('main button, main a')) if (!named(e)) bad.push(e.outerHTML);
        for (const e of document.querySelectorAll('#dag .node')) {
            if (!e.getAttribute('aria-label') || e.getAttribute('tabindex') !== '0') bad.push(e.outerHTML);
        }
        return bad;
    "#)
    .await
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The ids of the task rows the list shows.
async fn listed(b: &Browser) -> Vec<i64> {
    let v = b
        .js("return [...document.querySelectorAll('#task-rows tr')].map(r => Number(r.dataset.taskId));")
        .await;
    serde_json::from_value(v).expect("ids")
}

async fn wait_listed(b: &Browser, want: &[i64]) {
    let deadline = tokio::time::Instant::now() + crate::browser::WAIT;
    loop {
        let got = listed(b).await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "list shows {got:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn api_ids(app: &TestApp, q: &str) -> Vec<i64> {
    app.get(&format!("/api/v2/tasks/instances?{q}")).await.ok()["contents"]
        .as_array()
        .expect("contents")
        .iter()
        .map(|t| t["id"].as_i64().unwrap())
        .collect()
}

/// The DAG drawn in the page: nodes, edges, and whether every edge points
/// down to a later rank.
async fn drawn_dag(b: &Browser) -> (BTreeSet<i64>, BTreeSet<(i64, i64)>, bool) {
    let v = b
        .js(r#"
            const y = (id) => document.querySelector(`#dag [data-subtask-id="${id}"]`).transform.baseVal[0].matrix.f;
            const nodes = [...document.querySelectorAll('#dag [data-subtask-id]')].map(e => Number(e.dataset.subtaskId));
            const edges = [...document.querySelectorAll('#dag .edge')].map(e => [Number(e.dataset.from), Number(e.dataset.to)]);
            return { nodes, edges, down: edges.every(([a, b]) => y(a) < y(b)) };
        "#)
        .await;
    let nodes = serde_json::from_value(v["nodes"].clone()).unwrap();
    let edges: Vec<(i64, i64)> = serde_json::from_value(v["edges"].clone()).unwrap();
    (nodes, edges.into_iter().collect(), v["down"] == true)
}

fn api_dag(task: &Value) -> (BTreeSet<i64>, BTreeSet<(i64, i64)>) {
    let subs = task["subtasks"].as_array().expect("subtasks");
    let nodes = subs.iter().map(|s| s["id"].as_i64().unwrap()).collect();
    let ids = |v: &Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect()
    };
    let (mut by_up, mut by_down) = (BTreeSet::new(), BTreeSet::new());
    for s in subs {
        let id = s["id"].as_i64().unwrap();
        by_up.extend(ids(&s["upstreams"]).into_iter().map(|u| (u, id)));
        by_down.extend(ids(&s["downstreams"]).into_iter().map(|d| (id, d)));
    }
    assert_eq!(by_up, by_down, "upstreams and downstreams agree");
    (nodes, by_up)
}

/// The task id the page's location names.
async fn task_in_location(b: &Browser, not: i64) -> i64 {
    let v = b
        .wait_js(
            "the console opens the new task",
            &format!(
                "const m = location.hash.match(/^#\\/tasks\\/(\\d+)/); \
                 return m && Number(m[1]) !== {not} ? Number(m[1]) : null;"
            ),
        )
        .await;
    v.as_i64().expect("a task id")
}

#[tokio::test]
async fn an_operator_filters_follows_a_task_and_retries_a_failure_in_the_browser() {
    let w = World::new(&["RUNNING"], None).await;
    let app = &w.app;
    let b = Browser::start().await;
    b.sign_in(&app.base, &app.admin.name, &app.admin.password)
        .await;

    // Two tasks: an agent restart that finishes, a server restart kept
    // RUNNING a while by a stalled step.
    let agent_task = w
        .post(&format!("/compute/hosts/{}/agent/restart", w.hosts[0]))
        .await;
    assert_eq!(w.settled(agent_task).await["status"], "SUCCESSFUL");
    w.clients[0]
        .set_fault(&FaultSpec::stall(Operation::ObserverStart, 1, 8000))
        .await
        .unwrap();
    let restart = w.post(&w.op("restart", 0)).await;

    // The list shows both, newest first, as the API does.
    wait_listed(&b, &[restart, agent_task]).await;
    b.screenshot("console-tasks").await;
    assert_eq!(
        unlabelled(&b).await,
        json!([]),
        "the list's controls are labelled"
    );
    // Filter by status, then by host.
    b.click("#f-status-RUNNING").await;
    b.click("#apply-filters").await;
    assert_eq!(api_ids(app, "status=RUNNING").await, vec![restart]);
    wait_listed(&b, &[restart]).await;
    b.click("#clear-filters").await;
    wait_listed(&b, &[restart, agent_task]).await;
    b.fill("#f-host", &w.hosts[0].to_string()).await;
    b.click("#apply-filters").await;
    assert_eq!(
        api_ids(app, &format!("hostId={}", w.hosts[0])).await,
        vec![agent_task]
    );
    wait_listed(&b, &[agent_task]).await;
    // The time range goes to the list as createTimeFrom (RFC 3339) and back
    // into the form. (Filtering by it is the history branch's parameter of
    // GET /api/v2/tasks/instances; until that is merged the server ignores
    // it, so the rows are not checked here.)
    let from = (chrono::Utc::now() - chrono::Duration::seconds(60)).to_rfc3339();
    let q = format!("createTimeFrom={}", urlencode(&from));
    b.goto(&format!("{}/console#/tasks?{q}", app.base)).await;
    b.wait_js(
        "the form shows the range from the address",
        "return document.getElementById('f-createTimeFrom').value.length === 16;",
    )
    .await;

    // Open the running task: its DAG is the API's, drawn by rank.
    b.goto(&format!("{}/console#/tasks/{restart}", app.base))
        .await;
    b.wait("#dag [data-subtask-id]").await;
    b.wait_text("#task-status", |t| t == "RUNNING").await;
    let (nodes, edges, downward) = drawn_dag(&b).await;
    let (api_nodes, api_edges) = api_dag(&w.task(restart).await);
    assert_eq!(nodes, api_nodes);
    assert_eq!(edges, api_edges);
    assert!(downward, "every edge goes down to a later rank");
    // The page follows it to the end by itself.
    b.wait_text("#task-status", |t| t == "SUCCESSFUL").await;
    b.wait_js(
        "every node is drawn SUCCESSFUL",
        "return [...document.querySelectorAll('#dag .node')].every(n => n.dataset.status === 'SUCCESSFUL');",
    )
    .await;

    // From the inventory: restart the server, with its observer failing.
    w.clients[0]
        .set_fault(&FaultSpec::fail(Operation::ObserverStart, 3))
        .await
        .unwrap();
    b.goto(&format!("{}/console#/inventory", app.base)).await;
    let server = w.servers[0];
    b.wait(&format!(
        "tr[data-server-id='{server}'] ul.latest a[href='#/tasks/{restart}']"
    ))
    .await;
    b.wait(&format!(
        "tr[data-host-id='{}'] ul.latest a[href='#/tasks/{agent_task}']",
        w.hosts[0]
    ))
    .await;
    // What the server's state does not admit is not offered.
    b.wait_js(
        "start is disabled for a RUNNING server, restart is not",
        &format!(
            "const b = (op) => document.getElementById(`server-{server}-${{op}}`); \
             return b('start').disabled && !b('restart').disabled && !b('stop').disabled;"
        ),
    )
    .await;
    b.screenshot("console-inventory").await;
    assert_eq!(
        unlabelled(&b).await,
        json!([]),
        "the inventory's controls are labelled"
    );
    b.click(&format!("#server-{server}-restart")).await;
    b.confirm().await;
    let failing = task_in_location(&b, restart).await;
    b.wait_text("#task-status", |t| t == "FAILED").await;
    let failure = b
        .wait_text("#failure", |t| t.contains("Start observer process"))
        .await;
    assert!(failure.contains("run 3"), "{failure}");
    // The log shown is the failed subtask's, its last run's.
    b.wait_text("#log", |t| {
        t.contains("RETRY run 3 of Start observer process")
    })
    .await;
    b.wait_text("#node-error", |t| !t.is_empty()).await;
    // Every run's log, through the run selector.
    b.wait("#log-run option[value='all']").await;
    b.wait("#log-run")
        .await
        .select_by_value("all")
        .await
        .expect("choose every run");
    b.wait_text("#log", |t| {
        (1..=3).all(|n| t.contains(&format!("run {n} of Start observer process")))
    })
    .await;
    b.screenshot("console-task").await;
    assert_eq!(
        unlabelled(&b).await,
        json!([]),
        "the task's controls are labelled"
    );

    // Retry it from the console: it runs again and succeeds.
    w.clients[0].clear_faults().await.unwrap();
    b.click("#task-retry").await;
    b.confirm().await;
    b.wait_text("#task-status", |t| t == "SUCCESSFUL").await;
    let t = w.task(failing).await;
    assert_eq!(
        (t["status"].as_str(), t["operation"].as_str()),
        (Some("SUCCESSFUL"), Some("RETRY")),
        "{t:#}"
    );
    b.close().await;
    w.finish().await;
}

#[tokio::test]
async fn a_task_viewer_is_offered_no_action_and_its_forged_requests_are_refused() {
    let w = World::new(&["RUNNING"], None).await;
    let app = &w.app;
    w.clients[0]
        .set_fault(&FaultSpec::fail(Operation::ObserverStart, 3))
        .await
        .unwrap();
    let id = w.post(&w.op("restart", 0)).await;
    assert_eq!(w.settled(id).await["status"], "FAILED");
    let (_, viewer) = app
        .add_user("watcher", json!([{"role": "TASK_VIEWER"}]))
        .await;

    let b = Browser::start().await;
    b.sign_in(&app.base, &viewer.name, &viewer.password).await;
    b.goto(&format!("{}/console#/tasks/{id}", app.base)).await;
    b.wait_text("#failure", |t| t.contains("Start observer process"))
        .await;
    b.wait("#node-name").await;
    assert_eq!(
        b.count("#task-actions button, #subtask-actions button")
            .await,
        0
    );
    // On a narrow screen the page reflows instead of scrolling sideways.
    b.viewport(390, 844).await;
    b.wait_js(
        "the page fits a narrow screen",
        "return innerWidth <= 400 && document.documentElement.scrollWidth <= innerWidth;",
    )
    .await;
    b.screenshot("console-task-narrow").await;
    b.viewport(1280, 800).await;
    b.goto(&format!("{}/console#/inventory", app.base)).await;
    b.wait(&format!(
        "tr[data-server-id='{}'] ul.latest a",
        w.servers[0]
    ))
    .await;
    b.wait(&format!("tr[data-host-id='{}']", w.hosts[0])).await;
    assert_eq!(b.count(".ops button, [id$='-restart-agent']").await, 0);

    // Requests forged from the viewer's own session: without the CSRF
    // token, and with it (the role refuses).
    let v = b
        .js_async(&format!(
            r#"
            const retry = () => fetch('/api/v2/tasks/instances/{id}/retry', {{ method: 'POST', headers: arguments[0] }});
            const bare = await fetch('/api/v2/tasks/instances/{id}/retry', {{ method: 'POST' }});
            const me = await (await fetch('/console/api/session')).json();
            const signed = await fetch('/api/v2/tasks/instances/{id}/retry',
                {{ method: 'POST', headers: {{ 'X-CSRF-Token': me.data.csrfToken }} }});
            return [bare.status, (await bare.json()).error.message, signed.status, (await signed.json()).error.message];
            "#
        ))
        .await;
    assert_eq!(v[0], 403, "{v}");
    assert!(v[1].as_str().unwrap().contains("X-CSRF-Token"), "{v}");
    assert_eq!(v[2], 403, "{v}");
    assert!(v[3].as_str().unwrap().contains("TASK_MANAGE"), "{v}");
    let t = w.task(id).await;
    assert_eq!(
        (t["status"].as_str(), t["operation"].as_str()),
        (Some("FAILED"), Some("EXECUTE"))
    );
    b.close().await;
    w.finish().await;
}

#[tokio::test]
async fn the_console_detail_says_what_is_allowed_and_why_a_task_waits() {
    let w = World::new(&["RUNNING"], None).await;
    let app = &w.app;
    w.clients[0]
        .set_fault(&FaultSpec::fail(Operation::ObserverStart, 3))
        .await
        .unwrap();
    let id = w.post(&w.op("restart", 0)).await;
    assert_eq!(w.settled(id).await["status"], "FAILED");
    let d = app.get(&format!("/console/api/tasks/{id}")).await;
    let d = d.ok();
    assert_eq!(
        d["actions"],
        json!({"retry": true, "rollback": true}),
        "{d:#}"
    );
    assert_eq!(d["failures"].as_array().unwrap().len(), 1, "{d:#}");
    assert_eq!(d["failures"][0]["name"], "Start observer process");
    assert_eq!(d["failures"][0]["runTime"], 3);
    let failed_id = d["failures"][0]["subtaskId"].as_i64().unwrap();
    let node = d["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == failed_id)
        .unwrap();
    assert_eq!(
        node["actions"],
        json!({"retry": true, "skip": true, "cancel": false})
    );
    assert_eq!(node["runs"].as_array().unwrap().len(), 3, "{node:#}");
    assert!(node["error"].as_str().is_some());

    // A viewer is offered nothing; the API still answers the read.
    let (_, viewer) = app
        .add_user("reader", json!([{"role": "TASK_VIEWER"}]))
        .await;
    let a = app
        .request_as(
            Some(&viewer),
            Method::GET,
            &format!("/console/api/tasks/{id}"),
        )
        .await;
    assert_eq!(
        a.ok()["actions"],
        json!({"retry": false, "rollback": false})
    );
    let (_, nobody) = app
        .add_user("hostop", json!([{"role": "HOST_MANAGER"}]))
        .await;
    app.request_as(
        Some(&nobody),
        Method::GET,
        &format!("/console/api/tasks/{id}"),
    )
    .await
    .assert_error(403, "FORBIDDEN");

    // Retried with the observer stalled: the downstream waits for it.
    w.clients[0].clear_faults().await.unwrap();
    w.clients[0]
        .set_fault(&FaultSpec::stall(Operation::ObserverStart, 1, 5000))
        .await
        .unwrap();
    app.post(&format!("/api/v2/tasks/instances/{id}/retry"))
        .await
        .ok();
    let waiting = wait_for(
        "the downstream to wait for its upstream",
        Duration::from_secs(10),
        || async {
            let d = app.get(&format!("/console/api/tasks/{id}")).await;
            let d = d.ok().clone();
            d["nodes"].as_array().unwrap().iter().find_map(|n| {
                n["waiting"]
                    .as_str()
                    .filter(|w| w.contains("Start observer process"))
                    .map(str::to_string)
            })
        },
    )
    .await;
    assert!(waiting.starts_with("waiting for upstream"), "{waiting}");
    let d = app.get(&format!("/console/api/tasks/{id}")).await;
    assert_eq!(
        d.ok()["actions"],
        json!({"retry": false, "rollback": false})
    );
    assert_eq!(w.settled(id).await["status"], "SUCCESSFUL");

    // What each server's state admits.
    let ops = app.get("/console/api/server-operations").await;
    assert_eq!(
        ops.ok()[0],
        json!({"serverId": w.servers[0], "clusterId": w.cluster, "restart": true,
               "restartForce": true, "start": false, "stop": true, "stopForce": true})
    );

    // The inventory's latest tasks.
    let latest = app.get("/console/api/latest-tasks").await;
    let latest = latest.ok();
    assert_eq!(latest[0]["id"], id);
    assert_eq!(latest[0]["target"], format!("server:{}", w.servers[0]));
    w.finish().await;
}
