//! The task list: filters, sort keys, the bounded count and the page, built
//! with `QueryBuilder` because which filters apply is only known per request
//! (so these statements are not compile-checked; see `store`'s doc).

use super::super::Result;
use super::{TaskRow, COLUMNS};
use crate::model::{TaskStatus, TaskType};
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, QueryBuilder};

/// Filters of the task list; every field is optional. Time bounds are
/// inclusive.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub name: Option<String>,
    pub statuses: Vec<TaskStatus>,
    pub task_type: Option<TaskType>,
    pub cluster_id: Option<i64>,
    pub host_id: Option<i64>,
    pub server_id: Option<i64>,
    pub creator: Option<String>,
    pub create_from: Option<DateTime<Utc>>,
    pub create_to: Option<DateTime<Utc>>,
    pub finish_from: Option<DateTime<Utc>>,
    pub finish_to: Option<DateTime<Utc>>,
}

/// Columns the list may be sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Id,
    Name,
    Status,
    CreateTime,
    StartTime,
    FinishTime,
}

impl SortKey {
    pub fn parse(s: &str) -> Option<SortKey> {
        Some(match s {
            "id" => SortKey::Id,
            "name" => SortKey::Name,
            "status" => SortKey::Status,
            "createTime" => SortKey::CreateTime,
            "startTime" => SortKey::StartTime,
            "finishTime" => SortKey::FinishTime,
            _ => return None,
        })
    }

    /// The `order by` of this key, each matching an index `(column, id)`
    /// read forwards or backwards. A RUNNING task has no finish time and
    /// sorts as if it finished after every other (last ascending, first
    /// descending), which is the order of that index.
    fn order_by(self, descending: bool) -> String {
        let column = match self {
            SortKey::Id => return format!("id {}", dir(descending)),
            SortKey::Name => "name",
            SortKey::Status => "status",
            SortKey::CreateTime => "create_time",
            SortKey::StartTime => "start_time",
            SortKey::FinishTime => "finish_time",
        };
        let d = dir(descending);
        format!("{column} {d}, id {d}")
    }
}

impl SortKey {
    /// The columns `order_by` reads.
    fn columns(self) -> &'static str {
        match self {
            SortKey::Id => "id",
            SortKey::Name => "id, name",
            SortKey::Status => "id, status",
            SortKey::CreateTime => "id, create_time",
            SortKey::StartTime => "id, start_time",
            SortKey::FinishTime => "id, finish_time",
        }
    }
}

fn dir(descending: bool) -> &'static str {
    if descending {
        "desc"
    } else {
        "asc"
    }
}

fn push_filter(qb: &mut QueryBuilder<'_, Postgres>, f: &ListFilter) {
    qb.push(" where true");
    if let Some(name) = &f.name {
        let escaped = name
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        qb.push(" and name ilike ")
            .push_bind(format!("%{escaped}%"));
    }
    if !f.statuses.is_empty() {
        let s: Vec<&str> = f.statuses.iter().map(|s| s.as_str()).collect();
        qb.push(" and status = any(").push_bind(s).push(")");
    }
    if let Some(t) = f.task_type {
        qb.push(" and type = ").push_bind(t.as_str());
    }
    if let Some(c) = f.cluster_id {
        qb.push(" and cluster_id = ").push_bind(c);
    }
    if let Some(h) = f.host_id {
        qb.push(" and host_id = ").push_bind(h);
    }
    if let Some(s) = f.server_id {
        qb.push(" and server_id = ").push_bind(s);
    }
    if let Some(c) = &f.creator {
        qb.push(" and creator = ").push_bind(c.clone());
    }
    let ranges = [
        ("create_time >= ", f.create_from),
        ("create_time <= ", f.create_to),
        ("finish_time >= ", f.finish_from),
        ("finish_time <= ", f.finish_to),
    ];
    for (cond, t) in ranges {
        if let Some(t) = t {
            qb.push(" and ").push(cond).push_bind(t);
        }
    }
}

/// Matching tasks are counted exactly up to this many; past it the total
/// is the planner's estimate (never below this bound), flagged as such.
pub const EXACT_COUNT_BOUND: i64 = 10_000;

/// The size of a filtered list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Total {
    pub count: i64,
    /// False when `count` is an estimate (more than `EXACT_COUNT_BOUND`).
    pub exact: bool,
}

/// Counts the matching tasks, exactly up to `bound`, then by estimate.
pub async fn count(conn: &mut PgConnection, f: &ListFilter, bound: i64) -> Result<Total> {
    let mut qb = QueryBuilder::new("select count(*) from (select 1 from task_instance");
    push_filter(&mut qb, f);
    qb.push(" limit ").push_bind(bound + 1).push(") x");
    // Unnamed statements: planned for these values, not a generic plan
    // that cannot tell a rare status or name from a common one.
    let n: i64 = qb
        .build_query_scalar()
        .persistent(false)
        .fetch_one(&mut *conn)
        .await?;
    if n <= bound {
        return Ok(Total {
            count: n,
            exact: true,
        });
    }
    let mut qb = QueryBuilder::new("explain (format json) select 1 from task_instance");
    push_filter(&mut qb, f);
    let plan: Json<serde_json::Value> = qb
        .build_query_scalar()
        .persistent(false)
        .fetch_one(&mut *conn)
        .await?;
    let estimate = plan.0[0]["Plan"]["Plan Rows"].as_f64().unwrap_or(0.0) as i64;
    Ok(Total {
        count: estimate.max(bound + 1),
        exact: false,
    })
}

/// One page of tasks (page is 0-based here) and the total count. The page's
/// ids are read first (from an index in the sort's order, most filters
/// answered by the same index), then only those rows.
pub async fn list(
    conn: &mut PgConnection,
    f: &ListFilter,
    sort: SortKey,
    descending: bool,
    page: i64,
    size: i64,
) -> Result<(Vec<TaskRow>, Total)> {
    let total = count(conn, f, EXACT_COUNT_BOUND).await?;
    let gather = gather_first(f, sort, total);
    let rows = page_query("", f, (sort, descending), gather, page, size)
        .build_query_as()
        .persistent(false)
        .fetch_all(&mut *conn)
        .await?;
    Ok((rows, total))
}

/// Matches at most this many (by the count or its estimate), a time range
/// sorted by another key is read whole through the range's index and then
/// sorted; past it, the sort's index is read in order.
pub const GATHER_BELOW: i64 = 200_000;

/// True when `list` should read all matches of a time range first.
fn gather_first(f: &ListFilter, sort: SortKey, total: Total) -> bool {
    let create = (f.create_from.is_some() || f.create_to.is_some()) && sort != SortKey::CreateTime;
    let finish = (f.finish_from.is_some() || f.finish_to.is_some()) && sort != SortKey::FinishTime;
    (create || finish) && total.count <= GATHER_BELOW
}

fn page_query<'a>(
    prefix: &str,
    f: &'a ListFilter,
    (sort, descending): (SortKey, bool),
    gather_first: bool,
    page: i64,
    size: i64,
) -> QueryBuilder<'a, Postgres> {
    let order = sort.order_by(descending);
    let mut qb = if gather_first {
        // All matches first, through the time range's index, then the
        // page: the planner would otherwise walk the sort's index hoping
        // to meet the range soon, through every newer task when the range
        // is old.
        let mut qb = QueryBuilder::new(format!(
            "{prefix}with p as materialized (select id from (select {} from task_instance",
            sort.columns()
        ));
        push_filter(&mut qb, f);
        // `offset 0` keeps the subquery from being flattened into the page.
        qb.push(" offset 0) m");
        qb
    } else {
        let mut qb = QueryBuilder::new(format!(
            "{prefix}with p as materialized (select id from task_instance"
        ));
        push_filter(&mut qb, f);
        qb
    };
    qb.push(format!(" order by {order} limit "))
        .push_bind(size)
        .push(" offset ")
        .push_bind(page.saturating_mul(size));
    qb.push(format!(
        ") select {COLUMNS} from task_instance where id in (select id from p) order by {order}"
    ));
    qb
}

/// The plan (EXPLAIN, FORMAT JSON) of one page of `list` and of its
/// count, for tests and the bench to check which indexes serve them.
pub async fn explain_list(
    conn: &mut PgConnection,
    f: &ListFilter,
    sort: SortKey,
    descending: bool,
    page: i64,
    size: i64,
) -> Result<(serde_json::Value, serde_json::Value)> {
    let gather = gather_first(f, sort, count(conn, f, EXACT_COUNT_BOUND).await?);
    let page: Json<serde_json::Value> = page_query(
        "explain (format json) ",
        f,
        (sort, descending),
        gather,
        page,
        size,
    )
    .build_query_scalar()
    .persistent(false)
    .fetch_one(&mut *conn)
    .await?;
    let mut qb = QueryBuilder::new(
        "explain (format json) select count(*) from (select 1 from task_instance",
    );
    push_filter(&mut qb, f);
    qb.push(" limit ")
        .push_bind(EXACT_COUNT_BOUND + 1)
        .push(") x");
    let count: Json<serde_json::Value> = qb
        .build_query_scalar()
        .persistent(false)
        .fetch_one(&mut *conn)
        .await?;
    Ok((page.0, count.0))
}
