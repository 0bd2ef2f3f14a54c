//! Users and roles over HTTP, for ADMINs only: create, list, read and
//! delete users, set their roles and passwords, and list the roles with
//! what they allow. Password hashes are never returned; a password is
//! never echoed, not even in a refusal.

use super::envelope::{ser_time, EmptyEnvelope, Envelope, ErrorEnvelope, NoData, Paged, Success};
use super::error::Result;
use super::extract::{positive_id, ApiJson, ApiPath, ApiQuery, Validate};
use super::inventory::PageQuery;
use super::tasks::page_params;
use super::AppState;
use crate::auth::{self, NewUser, Permission, RequireExt, Role, RoleGrant, User};
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    let admin = Permission::UserManage;
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user).require(admin))
        .routes(routes!(get_user, delete_user).require(admin))
        .routes(routes!(set_roles).require(admin))
        .routes(routes!(set_password).require(admin))
        .routes(routes!(list_roles).require(admin))
}

// ---------------------------------------------------------------- bodies

/// A user to create.
#[derive(Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateUser {
    /// Unique login name: 1 to 64 of letters, digits, `.`, `_`, `@` and
    /// `-`, starting with a letter or a digit.
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")]
    pub name: String,
    /// 8 to 256 bytes, no control characters. Stored as an argon2id hash.
    #[schema(format = Password, min_length = 8, max_length = 64, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub password: String,
    /// At least one role, each once.
    #[schema(min_items = 1)]
    pub roles: Vec<RoleGrant>,
}

impl std::fmt::Debug for CreateUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateUser")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

/// The roles a user is to have, replacing the ones it has.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetRoles {
    /// At least one role, each once.
    #[schema(min_items = 1)]
    pub roles: Vec<RoleGrant>,
}

/// A user's new password.
#[derive(Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetPassword {
    /// 8 to 256 bytes, no control characters.
    #[schema(format = Password, min_length = 8, max_length = 64, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub password: String,
}

impl std::fmt::Debug for SetPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetPassword").finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------- views

/// A user, without its password.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub id: i64,
    pub name: String,
    /// Its roles, in role order.
    pub roles: Vec<RoleGrant>,
    #[serde(serialize_with = "ser_time")]
    #[schema(value_type = String, format = DateTime)]
    pub create_time: DateTime<Utc>,
    /// When its password or roles last changed.
    #[serde(serialize_with = "ser_time")]
    #[schema(value_type = String, format = DateTime)]
    pub update_time: DateTime<Utc>,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        UserView {
            id: u.id,
            name: u.name,
            roles: u.roles,
            create_time: u.create_time,
            update_time: u.update_time,
        }
    }
}

/// A role and what it allows.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleView {
    pub name: Role,
    pub description: String,
    /// True when a grant of it may be limited to clusters (`clusterIds`).
    pub cluster_scoped: bool,
    /// The permissions it allows (INVENTORY_READ is every user's).
    pub permissions: Vec<Permission>,
}

// ---------------------------------------------------------------- params

/// `{id}` of a user.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct UserPath {
    /// The user's id.
    #[param(minimum = 1)]
    pub id: i64,
}

impl Validate for UserPath {
    fn validate(&self) -> Result<()> {
        positive_id("id", self.id).map(drop)
    }
}

// ---------------------------------------------------------------- handlers

/// Create a user with its roles. Needs ADMIN.
#[utoipa::path(
    post,
    path = "/api/v2/iam/users",
    tag = "iam",
    request_body = CreateUser,
    responses(
        (status = 200, description = "The new user (without its password)", body = Envelope<UserView>),
        (status = 400, description = "An invalid name, password or role (named), an unknown cluster id, or malformed JSON", body = ErrorEnvelope),
        (status = 403, description = "The caller is not an ADMIN (FORBIDDEN)", body = ErrorEnvelope),
        (status = 409, description = "A user with this name exists (DUPLICATE)", body = ErrorEnvelope),
        (status = 415, description = "The body is not application/json", body = ErrorEnvelope),
    )
)]
pub async fn create_user(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateUser>,
) -> Result<Success<UserView>> {
    let new = NewUser {
        name: body.name,
        password: body.password,
        roles: body.roles,
    };
    let user = auth::users::add_user(&state.pool, &new).await?;
    Ok(Success(user.into()))
}

/// List users by id. Needs ADMIN.
#[utoipa::path(
    get,
    path = "/api/v2/iam/users",
    tag = "iam",
    params(PageQuery),
    responses(
        (status = 200, description = "One page of users", body = Envelope<Paged<UserView>>),
        (status = 400, description = "A bad page or size", body = ErrorEnvelope),
        (status = 403, description = "The caller is not an ADMIN (FORBIDDEN)", body = ErrorEnvelope),
    )
)]
pub async fn list_users(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Success<Paged<UserView>>> {
    let (page, size) = page_params(q.page, q.size)?;
    let (users, total) = auth::users::list_users(&state.pool, page - 1, size).await?;
    let views = users.into_iter().map(UserView::from).collect();
    Ok(Success(Paged::new(views, total, page, size)))
}

/// One user. Needs ADMIN.
#[utoipa::path(
    get,
    path = "/api/v2/iam/users/{id}",
    tag = "iam",
    params(UserPath),
    responses(
        (status = 200, description = "The user (without its password)", body = Envelope<UserView>),
        (status = 400, description = "A bad id", body = ErrorEnvelope),
        (status = 403, description = "The caller is not an ADMIN (FORBIDDEN)", body = ErrorEnvelope),
        (status = 404, description = "No such user (USER_NOT_FOUND)", body = ErrorEnvelope),
    )
)]
pub async fn get_user(
    State(state): State<AppState>,
    ApiPath(p): ApiPath<UserPath>,
) -> Result<Success<UserView>> {
    Ok(Success(
        auth::users::get_user(&state.pool, p.id).await?.into(),
    ))
}

/// Delete a user and its roles; the tasks it created keep its name. The
/// last ADMIN cannot be deleted. Needs ADMIN.
#[utoipa::path(
    delete,
    path = "/api/v2/iam/users/{id}",
    tag = "iam",
    params(UserPath),
    responses(
        (status = 200, description = "Deleted", body = EmptyEnvelope),
        (status = 400, description = "A bad id", body = ErrorEnvelope),
        (status = 403, description = "The caller is not an ADMIN (FORBIDDEN)", body = ErrorEnvelope),
        (status = 404, description = "No such user (USER_NOT_FOUND)", body = ErrorEnvelope),
        (status = 409, description = "The user is the last ADMIN (CONFLICT)", body = ErrorEnvelope),
    )
)]
pub async fn delete_user(
    State(state): State<AppState>,
    ApiPath(p): ApiPath<UserPath>,
) -> Result<NoData> {
    auth::users::delete_user(&state.pool, p.id).await?;
    Ok(NoData)
}

/// Replace a user's roles. Taking ADMIN from the last ADMIN is refused.
/// Needs ADMIN.
#[utoipa::path(
    put,
    path = "/api/v2/iam/users/{id}/roles",
    tag = "iam",
    params(UserPath),
    request_body = SetRoles,
    responses(
        (status = 200, description = "The user with its new roles", body = Envelope<UserView>),
        (status = 400, description = "A bad id, an invalid role (named), an unknown cluster id, or malformed JSON", body = ErrorEnvelope),
        (status = 403, description = "The caller is not an ADMIN (FORBIDDEN)", body = ErrorEnvelope),
        (status = 404, description = "No such user (USER_NOT_FOUND)", body = ErrorEnvelope),
        (status = 409, description = "The user is the last ADMIN and would lose it (CONFLICT)", body = ErrorEnvelope),
        (status = 415, description = "The body is not application/json", body = ErrorEnvelope),
    )
)]
pub async fn set_roles(
    State(state): State<AppState>,
    ApiPath(p): ApiPath<UserPath>,
    ApiJson(body): ApiJson<SetRoles>,
) -> Result<Success<UserView>> {
    let user = auth::users::set_roles(&state.pool, p.id, &body.roles).await?;
    Ok(Success(user.into()))
}

/// Set a user's password. Needs ADMIN.
#[utoipa::path(
    put,
    path = "/api/v2/iam/users/{id}/password",
    tag = "iam",
    params(UserPath),
    request_body = SetPassword,
    responses(
        (status = 200, description = "Changed; the old password no longer works", body = EmptyEnvelope),
        (status = 400, description = "A bad id, a password that breaks the rules, or malformed JSON", body = ErrorEnvelope),
        (status = 403, description = "The caller is not an ADMIN (FORBIDDEN)", body = ErrorEnvelope),
        (status = 404, description = "No such user (USER_NOT_FOUND)", body = ErrorEnvelope),
        (status = 415, description = "The body is not application/json", body = ErrorEnvelope),
    )
)]
pub async fn set_password(
    State(state): State<AppState>,
    ApiPath(p): ApiPath<UserPath>,
    ApiJson(body): ApiJson<SetPassword>,
) -> Result<NoData> {
    auth::users::set_password(&state.pool, p.id, &body.password).await?;
    Ok(NoData)
}

/// The roles and the permissions each allows. Needs ADMIN.
#[utoipa::path(
    get,
    path = "/api/v2/iam/roles",
    tag = "iam",
    responses(
        (status = 200, description = "Every role", body = Envelope<Vec<RoleView>>),
        (status = 403, description = "The caller is not an ADMIN (FORBIDDEN)", body = ErrorEnvelope),
    )
)]
pub async fn list_roles() -> Success<Vec<RoleView>> {
    Success(
        Role::ALL
            .iter()
            .map(|r| RoleView {
                name: *r,
                description: r.description().to_string(),
                cluster_scoped: r.cluster_scoped(),
                permissions: r.permissions(),
            })
            .collect(),
    )
}
