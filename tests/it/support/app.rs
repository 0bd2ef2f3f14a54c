//! The HTTP application in-process against its own database: the API-only
//! `taskd::app::App` on a listener bound to 127.0.0.1:0, a reqwest client that sends an
//! admin's credentials, clients with other credentials or none, and helpers
//! that fill the inventory and add users over the API.

use crate::support::TestDb;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use taskd::auth::{AuthConfig, Credentials};
use tokio_util::sync::CancellationToken;

/// The name of the admin every [`TestApp`] starts with.
pub const ADMIN: &str = "admin";

pub struct TestApp {
    pub db: TestDb,
    pub base: String,
    /// `ip:port` the server answers on (the envelope's `server`).
    pub addr: String,
    /// Sends the admin's credentials with every request.
    pub client: reqwest::Client,
    /// The admin's name and password.
    pub admin: Credentials,
    pub shutdown: CancellationToken,
}

/// A client that sends these credentials with every request, or none.
pub fn client_for(creds: Option<&Credentials>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(c) = creds {
        let value = reqwest::header::HeaderValue::from_str(&c.to_header()).expect("a header");
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("a client")
}

/// Credentials from a name and a password.
pub fn creds(name: &str, password: &str) -> Credentials {
    Credentials {
        name: name.to_string(),
        password: password.to_string(),
    }
}

/// One answer: status, headers and the JSON body (Null when not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }

    pub fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }

    pub fn error_target(&self) -> &str {
        self.body["error"]["target"].as_str().unwrap_or_default()
    }

    /// Asserts an error envelope with this status and code.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{:#}", self.body);
        assert_eq!(self.body["successful"], false, "{:#}", self.body);
        assert_eq!(self.body["status"], status, "{:#}", self.body);
        assert!(self.body.get("data").is_none(), "{:#}", self.body);
        assert_eq!(self.error_code(), code, "{:#}", self.body);
    }

    /// Asserts a 400 naming `field` (as target and in subErrors).
    #[track_caller]
    pub fn assert_invalid(&self, field: &str) {
        self.assert_error(400, "ILLEGAL_ARGUMENT");
        assert_eq!(self.error_target(), field, "{:#}", self.body);
        let subs = self.body["error"]["subErrors"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            subs.iter().any(|s| s["field"] == field),
            "no subError names {field}: {:#}",
            self.body
        );
    }

    /// Asserts a successful envelope with status 200 and returns its data.
    #[track_caller]
    pub fn ok(&self) -> &Value {
        assert_eq!(self.status, StatusCode::OK, "{:#}", self.body);
        assert_eq!(self.body["successful"], true, "{:#}", self.body);
        assert_eq!(self.body["status"], 200);
        self.data()
    }
}

impl TestApp {
    /// The application with the default authentication settings and one
    /// user, the admin [`ADMIN`] with a generated password, whose
    /// credentials `client` sends.
    pub async fn start() -> TestApp {
        TestApp::start_with(AuthConfig::default()).await
    }

    pub async fn start_with(config: AuthConfig) -> TestApp {
        TestApp::start_on(config, None).await
    }

    /// The application reaching its database through `proxy` (the test's
    /// own `db.pool` connects directly).
    pub async fn start_through(proxy: &crate::faults::proxy::Proxy) -> TestApp {
        TestApp::start_on(AuthConfig::default(), Some(proxy)).await
    }

    async fn start_on(config: AuthConfig, proxy: Option<&crate::faults::proxy::Proxy>) -> TestApp {
        let db = TestDb::new().await;
        let app_pool = match proxy {
            None => db.pool.clone(),
            Some(p) => taskd::db::connect(&p.url(&db.url), 20)
                .await
                .expect("connect through the proxy"),
        };
        let admin = creds(ADMIN, &taskd::auth::generate_password());
        taskd::auth::ensure_admin(&db.pool, &admin.name, &admin.password)
            .await
            .expect("create the admin");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a free port");
        let local = listener.local_addr().expect("local address");
        let addr = local.to_string();
        let settings = taskd::app::Settings {
            engine: taskd::engine::EngineConfig::default(),
            auth: config,
            workers: 0,
        };
        let shutdown = CancellationToken::new();
        taskd::app::App::build(app_pool, Some(listener), settings)
            .expect("assemble the app")
            .spawn(shutdown.clone());
        TestApp {
            db,
            base: format!("http://{addr}"),
            addr,
            client: client_for(Some(&admin)),
            admin,
            shutdown,
        }
    }

    /// Sends a request with these credentials, or none.
    pub async fn request_as(
        &self,
        creds: Option<&Credentials>,
        method: Method,
        path: &str,
    ) -> Answer {
        self.send(client_for(creds).request(method, self.url(path)))
            .await
    }

    /// Adds a user with these roles (the API's `roles` array) over the API;
    /// returns its id and credentials.
    pub async fn add_user(&self, name: &str, roles: Value) -> (i64, Credentials) {
        let user = creds(name, &taskd::auth::generate_password());
        let a = self
            .post_json(
                "/api/v2/iam/users",
                &json!({"name": name, "password": user.password, "roles": roles}),
            )
            .await;
        let id = a.ok()["id"].as_i64().expect("a user id");
        (id, user)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let resp = req.send().await.expect("the server answers");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("a body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn request(&self, method: Method, path: &str) -> Answer {
        self.send(self.client.request(method, self.url(path))).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.request(Method::GET, path).await
    }

    pub async fn post(&self, path: &str) -> Answer {
        self.request(Method::POST, path).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Answer {
        self.send(self.client.post(self.url(path)).json(body)).await
    }

    pub async fn put_json(&self, path: &str, body: &Value) -> Answer {
        self.send(self.client.put(self.url(path)).json(body)).await
    }

    /// Adds a host over the API; returns its id.
    pub async fn add_host(&self, name: &str) -> i64 {
        let a = self
            .post_json(
                "/api/v2/compute/hosts",
                &json!({"name": name, "ip": "127.0.0.1", "agentUrl": "http://127.0.0.1:62888"}),
            )
            .await;
        a.ok()["id"].as_i64().expect("a host id")
    }

    /// Adds a cluster with one zone per entry of `servers` (zone name, host
    /// id, server status) over the API; returns the cluster's JSON.
    pub async fn add_cluster(&self, name: &str, servers: &[(&str, i64, &str)]) -> Value {
        let zones: Vec<Value> = servers
            .iter()
            .map(|(zone, host, status)| {
                json!({"name": zone, "servers": [{"hostId": host, "status": status}]})
            })
            .collect();
        let a = self
            .post_json(
                "/api/v2/ob/clusters",
                &json!({"name": name, "obClusterId": 12000001, "zones": zones}),
            )
            .await;
        a.ok().clone()
    }

    /// A cluster "protoss" with one server on a new host, in zone2, with
    /// this status; returns (cluster id, server id, host id).
    pub async fn one_server(&self, status: &str) -> (i64, i64, i64) {
        let host = self.add_host("host-a").await;
        let c = self
            .add_cluster("protoss", &[("zone2", host, status)])
            .await;
        let cluster = c["id"].as_i64().expect("cluster id");
        let server = c["zones"][0]["servers"][0]["id"]
            .as_i64()
            .expect("server id");
        (cluster, server, host)
    }

    pub async fn task_count(&self) -> i64 {
        let mut conn = self.db.pool.acquire().await.expect("a connection");
        let filter = taskd::store::task::ListFilter::default();
        taskd::store::task::list(
            &mut conn,
            &filter,
            taskd::store::task::SortKey::Id,
            false,
            0,
            1,
        )
        .await
        .expect("count tasks")
        .1
        .count
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
