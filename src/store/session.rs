//! SQL of the `console_session` aggregate: the console's signed-in
//! sessions, read together with their user and its grants in one query.

use super::user::{UserRow, USER_COLUMNS};
use super::Result;
use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

/// A live session: its CSRF token, when it ends, and its user.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub session_id: i64,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
    #[sqlx(flatten)]
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
    Ok(sqlx::query_scalar(
        "insert into console_session (token_hash, csrf_token, user_id, client_ip, expires_at) \
         values ($1, $2, $3, $4, now() + make_interval(secs => $5)) returning id",
    )
    .bind(token_hash)
    .bind(csrf_token)
    .bind(user_id)
    .bind(client_ip)
    .bind(ttl_secs as f64)
    .fetch_one(ex)
    .await?)
}

/// The unexpired session whose token hashes to `token_hash`, with its user.
pub async fn get_live(ex: impl PgExecutor<'_>, token_hash: &[u8]) -> Result<Option<SessionRow>> {
    let sql = format!(
        "select s.id as session_id, s.csrf_token, s.expires_at, {USER_COLUMNS} \
         from console_session s join iam_user u on u.id = s.user_id \
         where s.token_hash = $1 and s.expires_at > now()"
    );
    Ok(sqlx::query_as(&sql)
        .bind(token_hash)
        .fetch_optional(ex)
        .await?)
}

/// Ends the session whose token hashes to `token_hash`. False when there
/// was none.
pub async fn delete(ex: impl PgExecutor<'_>, token_hash: &[u8]) -> Result<bool> {
    let done = sqlx::query("delete from console_session where token_hash = $1")
        .bind(token_hash)
        .execute(ex)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Removes expired sessions (at most `limit`, so a sign-in never waits on
/// a large purge); returns how many.
pub async fn purge_expired(ex: impl PgExecutor<'_>, limit: i64) -> Result<u64> {
    let done = sqlx::query(
        "delete from console_session where id in ( \
             select id from console_session where expires_at <= now() order by expires_at limit $1)",
    )
    .bind(limit)
    .execute(ex)
    .await?;
    Ok(done.rows_affected())
}
