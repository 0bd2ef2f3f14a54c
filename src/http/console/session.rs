//! Console sessions: the sign-in form's endpoint (taskd's users and
//! passwords, with the failed-login throttle of HTTP Basic), the
//! `taskd_session` cookie (HttpOnly, SameSite=Strict, random, stored only
//! as its SHA-256 in PostgreSQL so every API replica serves it), sign-out,
//! and the middleware that authenticates API requests by that cookie.
//!
//! CSRF: a state-changing request (any method but GET, HEAD, OPTIONS) made
//! with the cookie must carry the session's own random token in
//! `X-CSRF-Token`, and, when the browser names it, an `Origin` equal to the
//! server's own (`Sec-Fetch-Site: same-origin` otherwise). SameSite=Strict
//! already keeps the cookie off cross-site requests; the token and the
//! origin check hold even where a browser does not honour it.
//!
//! A session ends at sign-out, after [`SESSION_TTL_SECS`], when its user is
//! deleted (foreign key) and when its user's password changes (trigger):
//! see `migrations/V7__console.sql`. Roles are read with the session on
//! every request, so a changed role applies at once.

use crate::auth::role::grants_of_rows;
use crate::auth::{self, Credentials, Permission, Principal, RoleGrant};
use crate::http::error::{code, Error, Result};
use crate::http::extract::ApiJson;
use crate::http::{envelope::Success, AppState};
use crate::store;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{AUTHORIZATION, COOKIE, HOST, ORIGIN, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{AppendHeaders, IntoResponse, Response};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The session cookie's name.
pub const COOKIE_NAME: &str = "taskd_session";
/// The header carrying the session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts after sign-in (12 hours).
pub const SESSION_TTL_SECS: i64 = 12 * 3600;
/// Most expired sessions removed at one sign-in.
const PURGE_BATCH: i64 = 100;

/// The session a request was authenticated with (a request extension).
#[derive(Debug, Clone)]
pub struct ConsoleSession {
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
    token_hash: Vec<u8>,
}

/// The sign-in form.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignIn {
    pub name: String,
    pub password: String,
}

/// Who is signed in, what the console may offer them, and the token its
/// state changes must carry.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    pub user: String,
    pub roles: Vec<RoleGrant>,
    /// Permissions held on every cluster.
    pub permissions: Vec<Permission>,
    /// The clusters whose servers the user may operate, when it may not
    /// operate every cluster's (empty: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_clusters: Option<Vec<i64>>,
    pub csrf_token: String,
    #[serde(serialize_with = "crate::http::envelope::ser_time")]
    pub expires_at: DateTime<Utc>,
}

fn view(p: &Principal, s: &ConsoleSession) -> SessionView {
    let permissions: Vec<Permission> = Permission::ALL
        .iter()
        .copied()
        .filter(|perm| p.allows(*perm, None) || global_server_operate(p, *perm))
        .collect();
    let server_clusters = if permissions.contains(&Permission::ServerOperate) {
        None
    } else {
        let mut ids: Vec<i64> = p
            .grants
            .iter()
            .filter(|g| g.role.allows(Permission::ServerOperate))
            .flat_map(|g| g.cluster_ids.clone().unwrap_or_default())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        Some(ids)
    };
    SessionView {
        user: p.name.clone(),
        roles: p.grants.clone(),
        permissions,
        server_clusters,
        csrf_token: s.csrf_token.clone(),
        expires_at: s.expires_at,
    }
}

/// A cluster-scoped permission held on every cluster.
fn global_server_operate(p: &Principal, perm: Permission) -> bool {
    perm.cluster_scoped()
        && p.grants
            .iter()
            .any(|g| g.role.allows(perm) && g.cluster_ids.is_none())
}

/// 32 random bytes, base64url without padding.
fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Equal byte strings, in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn session_cookie(token: &str) -> String {
    format!("{COOKIE_NAME}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_TTL_SECS}")
}

fn clearing_cookie() -> String {
    format!("{COOKIE_NAME}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The session token from the request's cookies.
fn token_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE_NAME)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

fn unauthorized(message: &str) -> Error {
    // No WWW-Authenticate: a browser must not answer this with its own
    // Basic dialog; the console shows its sign-in form instead.
    Error::refused(StatusCode::UNAUTHORIZED, code::UNAUTHORIZED, message)
}

fn forbidden(message: &str) -> Error {
    Error::refused(StatusCode::FORBIDDEN, code::FORBIDDEN, message)
}

/// Refuses a request that a browser says comes from another origin.
fn check_origin(headers: &HeaderMap) -> Result<()> {
    let host = headers.get(HOST).and_then(|h| h.to_str().ok());
    if let Some(origin) = headers.get(ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        return match (authority, host) {
            (Some(a), Some(h)) if a.eq_ignore_ascii_case(h) => Ok(()),
            _ => Err(forbidden(
                "cross-origin request refused: the Origin header does not name this server",
            )),
        };
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        None | Some("same-origin") | Some("none") => Ok(()),
        Some(_) => Err(forbidden(
            "cross-site request refused (Sec-Fetch-Site is not same-origin)",
        )),
    }
}

fn client_ip(connect: Option<axum::Extension<ConnectInfo<SocketAddr>>>) -> IpAddr {
    connect.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0 .0.ip())
}

/// `POST /console/api/sign-in`: checks the name and password like HTTP
/// Basic does (same throttle, same argon2 check) and starts a session.
pub async fn sign_in(
    State(state): State<AppState>,
    connect: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    ApiJson(form): ApiJson<SignIn>,
) -> Result<impl IntoResponse> {
    check_origin(&headers)?;
    let client = client_ip(connect);
    if form.name.is_empty() {
        return Err(Error::invalid("body", "name", "", "must not be empty"));
    }
    let creds = Credentials {
        name: form.name,
        password: form.password,
    };
    let principal = match state.auth.verify(&creds, client).await {
        Ok(p) => p,
        Err(auth::Error::Unauthenticated(m)) => return Err(unauthorized(&m)),
        Err(e) => return Err(e.into()),
    };
    let token = random_token();
    let csrf = random_token();
    let hash = hash_token(&token);
    let purged = store::session::purge_expired(&state.pool, PURGE_BATCH).await?;
    if purged > 0 {
        tracing::debug!(purged, "expired console sessions removed");
    }
    store::session::insert(
        &state.pool,
        &hash,
        &csrf,
        principal.user_id,
        &client.to_string(),
        SESSION_TTL_SECS,
    )
    .await?;
    let session = ConsoleSession {
        csrf_token: csrf,
        expires_at: Utc::now() + chrono::Duration::seconds(SESSION_TTL_SECS),
        token_hash: hash,
    };
    tracing::info!(user = %principal.name, client = %client, "console sign-in");
    Ok((
        AppendHeaders([(SET_COOKIE, session_cookie(&token))]),
        Success(view(&principal, &session)),
    ))
}

/// `GET /console/api/session`: the signed-in user and the CSRF token.
pub async fn current(
    principal: Principal,
    session: Option<axum::Extension<ConsoleSession>>,
) -> Result<Success<SessionView>> {
    let Some(axum::Extension(session)) = session else {
        return Err(unauthorized(
            "no console session: sign in at /console (HTTP Basic has none)",
        ));
    };
    Ok(Success(view(&principal, &session)))
}

/// `POST /console/api/sign-out`: ends the session and clears the cookie.
pub async fn sign_out(
    State(state): State<AppState>,
    principal: Principal,
    session: Option<axum::Extension<ConsoleSession>>,
) -> Result<impl IntoResponse> {
    if let Some(axum::Extension(s)) = session {
        store::session::delete(&state.pool, &s.token_hash).await?;
        tracing::info!(user = %principal.name, "console sign-out");
    }
    Ok((
        AppendHeaders([(SET_COOKIE, clearing_cookie())]),
        crate::http::envelope::NoData,
    ))
}

/// The middleware before HTTP Basic authentication: a request with the
/// session cookie (and no `Authorization` header) is authenticated by its
/// session, and a state change also by its CSRF token and origin. Without
/// the cookie the request goes on to HTTP Basic unchanged.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if req.headers().contains_key(AUTHORIZATION) {
        return next.run(req).await;
    }
    let Some(token) = token_of(req.headers()) else {
        if req.uri().path().starts_with("/console/") {
            // The console's own endpoints: no Basic challenge, which a
            // browser would answer with its own dialog.
            return unauthorized("not signed in: sign in at /console").into_response();
        }
        return next.run(req).await;
    };
    let hash = hash_token(&token);
    let row = match store::session::get_live(&state.pool, &hash).await {
        Ok(Some(row)) => row,
        Ok(None) => {
            let mut resp = unauthorized(
                "the console session has ended (expired, signed out, or the user or its \
                 password changed); sign in again",
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&clearing_cookie()) {
                resp.headers_mut().insert(SET_COOKIE, v);
            }
            return resp;
        }
        Err(e) => return Error::from(e).into_response(),
    };
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        if let Err(e) = check_origin(req.headers()) {
            tracing::warn!(user = %row.user.name, "console request refused: foreign origin");
            return e.into_response();
        }
        let sent = req
            .headers()
            .get(CSRF_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !same(sent, row.csrf_token.as_bytes()) {
            tracing::warn!(user = %row.user.name, "console request refused: CSRF token");
            return forbidden(
                "this state change carries the session cookie but not the session's \
                 X-CSRF-Token; it is refused",
            )
            .into_response();
        }
    }
    let grants = match grants_of_rows(&row.user.grants.0) {
        Ok(g) => g,
        Err(e) => return Error::from(e).into_response(),
    };
    let principal = Principal {
        user_id: row.user.id,
        name: row.user.name.clone(),
        grants,
    };
    tracing::Span::current().record("user", principal.name.as_str());
    req.extensions_mut().insert(principal);
    req.extensions_mut().insert(ConsoleSession {
        csrf_token: row.csrf_token,
        expires_at: row.expires_at,
        token_hash: hash,
    });
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_static("a=1; taskd_session=abc_-9 ; b=2"),
        );
        assert_eq!(token_of(&h).as_deref(), Some("abc_-9"));
        h.insert(COOKIE, HeaderValue::from_static("taskd_session="));
        assert_eq!(token_of(&h), None);
        h.insert(COOKIE, HeaderValue::from_static("other=1"));
        assert_eq!(token_of(&h), None);
    }

    #[test]
    fn origins_must_be_this_server() {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(check_origin(&h).is_ok(), "no Origin, no Sec-Fetch-Site");
        h.insert(ORIGIN, HeaderValue::from_static("http://127.0.0.1:8080"));
        assert!(check_origin(&h).is_ok());
        h.insert(ORIGIN, HeaderValue::from_static("http://evil.example"));
        assert!(check_origin(&h).is_err());
        h.insert(ORIGIN, HeaderValue::from_static("null"));
        assert!(check_origin(&h).is_err());
        h.remove(ORIGIN);
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(check_origin(&h).is_err());
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(check_origin(&h).is_ok());
    }

    #[test]
    fn tokens_are_random_and_compared_whole() {
        let (a, b) = (random_token(), random_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(same(a.as_bytes(), a.clone().as_bytes()));
        assert!(!same(a.as_bytes(), b.as_bytes()));
        assert!(!same(a.as_bytes(), &a.as_bytes()[..42]));
        assert!(!same(b"", a.as_bytes()));
    }
}
