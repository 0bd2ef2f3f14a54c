//! User management: create users (checking names, passwords and roles),
//! read, list and delete them, set their roles and passwords, and make sure
//! the first ADMIN exists. Used by the REST API and the command line alike.
//!
//! Writes run in one transaction each, under an advisory lock that
//! serializes them, and never leave the service without an ADMIN: deleting
//! the last ADMIN, or taking ADMIN from it, is a conflict. Password hashes
//! never leave this module's callers' reach: [`User`] has none.

use super::password;
use super::role::{grant_rows, grants_of_rows, Role, RoleGrant};
use super::{Error, Result};
use crate::store::user::{self, GrantRow, UserRow};
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

/// Longest user name.
pub const NAME_MAX: usize = 64;

/// A user as shown to callers: no password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub roles: Vec<RoleGrant>,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

impl TryFrom<UserRow> for User {
    type Error = Error;
    fn try_from(row: UserRow) -> Result<User> {
        Ok(User {
            roles: grants_of_rows(&row.grants.0)?,
            id: row.id,
            name: row.name,
            create_time: row.create_time,
            update_time: row.update_time,
        })
    }
}

/// A user to create.
#[derive(Clone)]
pub struct NewUser {
    pub name: String,
    pub password: String,
    pub roles: Vec<RoleGrant>,
}

impl std::fmt::Debug for NewUser {
    /// Never shows the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .field("roles", &self.roles)
            .finish()
    }
}

/// Checks a user name: 1 to 64 of letters, digits, `.`, `_`, `@` and `-`,
/// starting with a letter or digit (HTTP Basic forbids `:` in names).
pub fn check_name(name: &str) -> Result<()> {
    let invalid = |message: &str| Error::Invalid {
        field: "name".into(),
        message: message.into(),
    };
    let mut chars = name.chars();
    match chars.next() {
        None => return Err(invalid("must not be empty")),
        Some(c) if !c.is_ascii_alphanumeric() => {
            return Err(invalid("must start with a letter or a digit"))
        }
        Some(_) => {}
    }
    if name.len() > NAME_MAX {
        return Err(invalid("must be at most 64 characters long"));
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-')) {
        return Err(invalid(
            "may hold only letters, digits, \".\", \"_\", \"@\" and \"-\"",
        ));
    }
    Ok(())
}

fn not_found(id: i64) -> Error {
    Error::UserNotFound(format!("user {id}"))
}

/// Refuses cluster ids that name no cluster, naming the grant's field.
async fn check_clusters(conn: &mut PgConnection, grants: &[RoleGrant]) -> Result<()> {
    for (i, g) in grants.iter().enumerate() {
        let Some(ids) = &g.cluster_ids else { continue };
        let missing = user::missing_clusters(&mut *conn, ids).await?;
        if !missing.is_empty() {
            let missing: Vec<String> = missing.iter().map(i64::to_string).collect();
            return Err(Error::Invalid {
                field: format!("roles[{i}].clusterIds"),
                message: format!("no cluster has id {}", missing.join(", ")),
            });
        }
    }
    Ok(())
}

async fn load(conn: &mut PgConnection, id: i64) -> Result<User> {
    user::get(&mut *conn, id)
        .await?
        .ok_or_else(|| not_found(id))?
        .try_into()
}

/// Creates a user with its roles. A taken name is [`Error::UserExists`].
pub async fn add_user(pool: &PgPool, new: &NewUser) -> Result<User> {
    check_name(&new.name)?;
    password::check(&new.password)?;
    let rows = grant_rows(&new.roles)?;
    let hash = password::hash_blocking(new.password.clone()).await?;
    let mut tx = pool.begin().await?;
    user::lock(&mut tx).await?;
    check_clusters(&mut tx, &new.roles).await?;
    let id = match user::insert(&mut tx, &new.name, &hash).await {
        Ok(id) => id,
        Err(e) if e.unique_violation().is_some() => {
            return Err(Error::UserExists(new.name.clone()))
        }
        Err(e) => return Err(e.into()),
    };
    user::replace_grants(&mut tx, id, &rows).await?;
    let created = load(&mut tx, id).await?;
    tx.commit().await?;
    tracing::info!(user_id = id, user = %new.name, roles = %roles_text(&created.roles), "user added");
    Ok(created)
}

/// One user.
pub async fn get_user(pool: &PgPool, id: i64) -> Result<User> {
    let mut conn = pool.acquire().await?;
    load(&mut conn, id).await
}

/// One page of users by id (`page` is 0-based) and the total count.
pub async fn list_users(pool: &PgPool, page: i64, size: i64) -> Result<(Vec<User>, i64)> {
    let mut conn = pool.acquire().await?;
    let (rows, total) = user::list(&mut conn, page, size).await?;
    let users = rows
        .into_iter()
        .map(User::try_from)
        .collect::<Result<Vec<_>>>()?;
    Ok((users, total))
}

/// Number of users.
pub async fn count_users(pool: &PgPool) -> Result<i64> {
    Ok(user::count(pool).await?)
}

/// Refuses to leave the service without an ADMIN: `user` holds ADMIN now,
/// will not any more, and no other user holds it.
async fn keep_an_admin(conn: &mut PgConnection, current: &User, what: &str) -> Result<()> {
    let is_admin = current.roles.iter().any(|g| g.role == Role::Admin);
    if is_admin
        && user::count_with_role_except(&mut *conn, Role::Admin.as_str(), current.id).await? == 0
    {
        return Err(Error::Conflict(format!(
            "user {:?} is the last ADMIN; {what} would leave nobody to manage users \
             (grant ADMIN to another user first)",
            current.name
        )));
    }
    Ok(())
}

/// Deletes a user and its grants; the tasks it created keep its name.
pub async fn delete_user(pool: &PgPool, id: i64) -> Result<User> {
    let mut tx = pool.begin().await?;
    user::lock(&mut tx).await?;
    let current = load(&mut tx, id).await?;
    keep_an_admin(&mut tx, &current, "deleting it").await?;
    if !user::delete(&mut *tx, id).await? {
        return Err(not_found(id));
    }
    tx.commit().await?;
    tracing::info!(user_id = id, user = %current.name, "user deleted");
    Ok(current)
}

/// Replaces a user's roles (at least one).
pub async fn set_roles(pool: &PgPool, id: i64, roles: &[RoleGrant]) -> Result<User> {
    let rows: Vec<GrantRow> = grant_rows(roles)?;
    let mut tx = pool.begin().await?;
    user::lock(&mut tx).await?;
    let current = load(&mut tx, id).await?;
    if !roles.iter().any(|g| g.role == Role::Admin) {
        keep_an_admin(&mut tx, &current, "taking ADMIN from it").await?;
    }
    check_clusters(&mut tx, roles).await?;
    user::replace_grants(&mut tx, id, &rows).await?;
    let updated = load(&mut tx, id).await?;
    tx.commit().await?;
    tracing::info!(user_id = id, user = %updated.name, roles = %roles_text(&updated.roles), "roles set");
    Ok(updated)
}

/// Sets a user's password.
pub async fn set_password(pool: &PgPool, id: i64, new_password: &str) -> Result<()> {
    password::check(new_password)?;
    let hash = password::hash_blocking(new_password.to_string()).await?;
    if !user::set_password_hash(pool, id, &hash).await? {
        return Err(not_found(id));
    }
    tracing::info!(user_id = id, "password changed");
    Ok(())
}

/// Sets the password of the user named `name` (the command line's way).
pub async fn set_password_by_name(pool: &PgPool, name: &str, new_password: &str) -> Result<()> {
    let id = user::get_by_name(pool, name)
        .await?
        .ok_or_else(|| Error::UserNotFound(format!("user {name:?}")))?
        .id;
    set_password(pool, id, new_password).await
}

/// Makes sure a user named `name` exists, creating it with `password` and
/// the ADMIN role if it does not. An existing user is left as it is: its
/// password and roles are not changed (a warning is logged when it is not
/// an ADMIN); use `taskd user passwd` to reset a password.
pub async fn ensure_admin(pool: &PgPool, name: &str, password: &str) -> Result<()> {
    check_name(name)?;
    if let Some(existing) = user::get_by_name(pool, name).await? {
        let existing = User::try_from(existing)?;
        if existing.roles.iter().any(|g| g.role == Role::Admin) {
            tracing::info!(user = %name, "the admin user exists; left as it is");
        } else {
            tracing::warn!(user = %name, roles = %roles_text(&existing.roles),
                "the admin user exists but is not an ADMIN; left as it is");
        }
        return Ok(());
    }
    let new = NewUser {
        name: name.to_string(),
        password: password.to_string(),
        roles: vec![RoleGrant::global(Role::Admin)],
    };
    match add_user(pool, &new).await {
        // Another replica created it at the same time.
        Ok(_) | Err(Error::UserExists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// `ADMIN, CLUSTER_MANAGER:1,2` for log lines.
fn roles_text(roles: &[RoleGrant]) -> String {
    roles
        .iter()
        .map(RoleGrant::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for ok in ["admin", "a", "alice.smith@example.com", "ops_1-b"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", ".x", "a:b", "a b", "ünï", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn new_users_never_show_their_password() {
        let u = NewUser {
            name: "alice".into(),
            password: "s3cret-pass".into(),
            roles: vec![],
        };
        assert!(!format!("{u:?}").contains("s3cret"));
    }
}
