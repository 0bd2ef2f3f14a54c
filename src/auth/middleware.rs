//! The axum side of authentication: the middleware that authenticates every
//! request of a route group, the per-route permission guard
//! ([`RequireExt::require`]) and the [`Principal`] extractor.
//!
//! The middleware takes the client's IP from `ConnectInfo<SocketAddr>` (the
//! peer address; forwarding headers are not trusted) and removes the
//! `Authorization` header once it is read, so that nothing after it (a
//! handler, a log line, a panic message) can see the credentials. On
//! success it records the user's name in the request's span (`user`).

use super::role::{Permission, Principal};
use super::{Authenticator, Error, Result};
use axum::extract::{ConnectInfo, FromRequestParts, RawPathParams, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The client's IP, or 0.0.0.0 when the server was not started with
/// connect info (every such client shares one throttle).
fn client_ip(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip())
}

/// The middleware: authenticates the request or answers 401 (429 when the
/// client is throttled). Use with `axum::middleware::from_fn_with_state`.
pub async fn authenticate(
    State(auth): State<Authenticator>,
    mut req: Request,
    next: Next,
) -> Response {
    // Already authenticated by an earlier layer (the console's session).
    if req.extensions().get::<Principal>().is_some() {
        return next.run(req).await;
    }
    let client = client_ip(&req);
    let outcome = auth
        .authenticate(req.headers().get(AUTHORIZATION), client)
        .await;
    req.headers_mut().remove(AUTHORIZATION);
    match outcome {
        Ok(principal) => {
            tracing::Span::current().record("user", principal.name.as_str());
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// Puts a permission guard on a method router.
pub trait RequireExt {
    /// Only callers holding `permission` reach the handlers (403
    /// otherwise). For a cluster-scoped permission the cluster is the
    /// route's `{id}` path parameter.
    fn require(self, permission: Permission) -> Self;
}

impl<S> RequireExt for MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    fn require(self, permission: Permission) -> Self {
        self.route_layer(axum::middleware::from_fn_with_state(permission, authorize))
    }
}

/// A route and its OpenAPI document (utoipa-axum's `routes!`), guarded the
/// same way.
impl<S> RequireExt for utoipa_axum::router::UtoipaMethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    fn require(self, permission: Permission) -> Self {
        let (schemas, paths, router) = self;
        (schemas, paths, router.require(permission))
    }
}

/// The cluster a request is about: its `{id}` path parameter.
async fn cluster_of(parts: &mut Parts) -> Option<i64> {
    let params = RawPathParams::from_request_parts(parts, &()).await.ok()?;
    params
        .iter()
        .find(|(k, _)| *k == "id")
        .and_then(|(_, v)| v.parse().ok())
}

async fn authorize(State(permission): State<Permission>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let cluster = if permission.cluster_scoped() {
        cluster_of(&mut parts).await
    } else {
        None
    };
    let allowed = match parts.extensions.get::<Principal>() {
        Some(p) => p.check(permission, cluster),
        None => Err(unauthenticated()),
    };
    match allowed {
        Ok(()) => next.run(Request::from_parts(parts, body)).await,
        Err(e) => e.into_response(),
    }
}

fn unauthenticated() -> Error {
    Error::Unauthenticated("authentication is required; send HTTP Basic credentials".into())
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(unauthenticated)
    }
}
