//! SQL of the `iam_user` aggregate: users, their password hashes and their
//! role grants (`iam_user_role`), read together in one query.

use super::Result;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};

/// One role grant as stored: the role's name and, for a cluster-limited
/// grant, the cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub struct GrantRow {
    pub role: String,
    pub cluster_id: Option<i64>,
}

/// A user with its password hash and every grant.
#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: i64,
    pub name: String,
    pub password_hash: String,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub grants: Json<Vec<GrantRow>>,
}

/// Advisory lock key serializing writes to users and grants ("taskd-ia").
const IAM_LOCK: i64 = 0x7461_736b_642d_6961;

/// Takes the transaction-scoped lock that serializes user and grant writes,
/// so that "is another ADMIN left?" stays true until the commit.
pub async fn lock(conn: &mut PgConnection) -> Result<()> {
    sqlx::query!("select pg_advisory_xact_lock($1)", IAM_LOCK)
        .execute(conn)
        .await?;
    Ok(())
}

/// Inserts a user; returns its id. A taken name is a unique violation on
/// `iam_user_name_key`.
pub async fn insert(conn: &mut PgConnection, name: &str, password_hash: &str) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        "insert into iam_user (name, password_hash) values ($1, $2) returning id",
        name,
        password_hash,
    )
    .fetch_one(conn)
    .await?)
}

/// Replaces every grant of a user and touches its `update_time`.
pub async fn replace_grants(
    conn: &mut PgConnection,
    user_id: i64,
    grants: &[GrantRow],
) -> Result<()> {
    sqlx::query!("delete from iam_user_role where user_id = $1", user_id)
        .execute(&mut *conn)
        .await?;
    let roles: Vec<&str> = grants.iter().map(|g| g.role.as_str()).collect();
    let clusters: Vec<Option<i64>> = grants.iter().map(|g| g.cluster_id).collect();
    sqlx::query!(
        "insert into iam_user_role (user_id, role, cluster_id)
         select $1, g.role, g.cluster_id
         from unnest($2::text[], $3::bigint[]) as g (role, cluster_id)",
        user_id,
        &roles as _,
        &clusters as _,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "update iam_user set update_time = now() where id = $1",
        user_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(ex: impl PgExecutor<'_>, id: i64) -> Result<Option<UserRow>> {
    Ok(sqlx::query_as!(
        UserRow,
        r#"select u.id, u.name, u.password_hash, u.create_time, u.update_time,
               coalesce((select json_agg(json_build_object('role', r.role,
                                                           'cluster_id', r.cluster_id)
                                         order by r.role, r.cluster_id nulls first)
                         from iam_user_role r where r.user_id = u.id),
                        '[]'::json) as "grants!: Json<Vec<GrantRow>>"
           from iam_user u where u.id = $1"#,
        id
    )
    .fetch_optional(ex)
    .await?)
}

pub async fn get_by_name(ex: impl PgExecutor<'_>, name: &str) -> Result<Option<UserRow>> {
    Ok(sqlx::query_as!(
        UserRow,
        r#"select u.id, u.name, u.password_hash, u.create_time, u.update_time,
               coalesce((select json_agg(json_build_object('role', r.role,
                                                           'cluster_id', r.cluster_id)
                                         order by r.role, r.cluster_id nulls first)
                         from iam_user_role r where r.user_id = u.id),
                        '[]'::json) as "grants!: Json<Vec<GrantRow>>"
           from iam_user u where u.name = $1"#,
        name
    )
    .fetch_optional(ex)
    .await?)
}

/// One page of users by id (page is 0-based) and the total count.
pub async fn list(conn: &mut PgConnection, page: i64, size: i64) -> Result<(Vec<UserRow>, i64)> {
    let total = count(&mut *conn).await?;
    let rows = sqlx::query_as!(
        UserRow,
        r#"select u.id, u.name, u.password_hash, u.create_time, u.update_time,
               coalesce((select json_agg(json_build_object('role', r.role,
                                                           'cluster_id', r.cluster_id)
                                         order by r.role, r.cluster_id nulls first)
                         from iam_user_role r where r.user_id = u.id),
                        '[]'::json) as "grants!: Json<Vec<GrantRow>>"
           from iam_user u order by u.id limit $1 offset $2"#,
        size,
        page.saturating_mul(size),
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok((rows, total))
}

/// Deletes a user and its grants. False when there was no such user.
pub async fn delete(ex: impl PgExecutor<'_>, id: i64) -> Result<bool> {
    let done = sqlx::query!("delete from iam_user where id = $1", id)
        .execute(ex)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Sets a user's password hash. False when there was no such user.
pub async fn set_password_hash(ex: impl PgExecutor<'_>, id: i64, hash: &str) -> Result<bool> {
    let done = sqlx::query!(
        "update iam_user set password_hash = $2, update_time = now() where id = $1",
        id,
        hash,
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Users other than `except` holding `role` (unscoped or not).
pub async fn count_with_role_except(
    ex: impl PgExecutor<'_>,
    role: &str,
    except: i64,
) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        r#"select count(distinct user_id) as "n!" from iam_user_role
           where role = $1 and user_id <> $2"#,
        role,
        except,
    )
    .fetch_one(ex)
    .await?)
}

/// Number of users.
pub async fn count(ex: impl PgExecutor<'_>) -> Result<i64> {
    Ok(
        sqlx::query_scalar!(r#"select count(*) as "n!" from iam_user"#)
            .fetch_one(ex)
            .await?,
    )
}

/// The ids among `ids` that name no cluster, in ascending order.
pub async fn missing_clusters(ex: impl PgExecutor<'_>, ids: &[i64]) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar!(
        r#"select i as "i!" from unnest($1::bigint[]) as t (i)
           where not exists (select 1 from ob_cluster c where c.id = t.i)
           order by i"#,
        ids,
    )
    .fetch_all(ex)
    .await?)
}
