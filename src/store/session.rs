//! SQL of the `console_session` aggregate: the console's signed-in
//! sessions, read together with their user and its grants in one query.

use super::user::{GrantRow, UserRow};
use super::Result;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::PgExecutor;

/// A live session: its CSRF token, when it ends, and its user.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub session_id: i64,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
    pub user: UserRow,
}

/// Inserts a session of `user_id` that lasts `ttl_secs`; returns its id.
pub async fn insert(
    ex: impl PgExecutor<'_>,
    token_hash: &[u8],
    csrf_token: &str,
    user_id: i64,
    client_ip: &str,
    ttl_secs: i64,
) -> Result<i64> {
    Ok(sqlx::query_scalar!(
        "insert into console_session (token_hash, csrf_token, user_id, client_ip, expires_at)
         values ($1, $2, $3, $4, now() + make_interval(secs => $5)) returning id",
        token_hash,
        csrf_token,
        user_id,
        client_ip,
        ttl_secs as f64,
    )
    .fetch_one(ex)
    .await?)
}

/// The unexpired session whose token hashes to `token_hash`, with its user.
pub async fn get_live(ex: impl PgExecutor<'_>, token_hash: &[u8]) -> Result<Option<SessionRow>> {
    let row = sqlx::query!(
        r#"select s.id as session_id, s.csrf_token, s.expires_at,
               u.id, u.name, u.password_hash, u.create_time, u.update_time,
               coalesce((select json_agg(json_build_object('role', r.role,
                                                           'cluster_id', r.cluster_id)
                                         order by r.role, r.cluster_id nulls first)
                         from iam_user_role r where r.user_id = u.id),
                        '[]'::json) as "grants!: Json<Vec<GrantRow>>"
           from console_session s join iam_user u on u.id = s.user_id
           where s.token_hash = $1 and s.expires_at > now()"#,
        token_hash,
    )
    .fetch_optional(ex)
    .await?;
    Ok(row.map(|r| SessionRow {
        session_id: r.session_id,
        csrf_token: r.csrf_token,
        expires_at: r.expires_at,
        user: UserRow {
            id: r.id,
            name: r.name,
            password_hash: r.password_hash,
            create_time: r.create_time,
            update_time: r.update_time,
            grants: r.grants,
        },
    }))
}

/// Ends the session whose token hashes to `token_hash`. False when there
/// was none.
pub async fn delete(ex: impl PgExecutor<'_>, token_hash: &[u8]) -> Result<bool> {
    let done = sqlx::query!(
        "delete from console_session where token_hash = $1",
        token_hash
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Removes expired sessions (at most `limit`, so a sign-in never waits on
/// a large purge); returns how many.
pub async fn purge_expired(ex: impl PgExecutor<'_>, limit: i64) -> Result<u64> {
    let done = sqlx::query!(
        "delete from console_session where id in (
             select id from console_session where expires_at <= now()
             order by expires_at limit $1)",
        limit,
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected())
}
