//! The task API's parameters: paths, the list's filters, page, size and
//! sort, and the log query, each validated into the store's terms.

use super::super::error::{Error, Result};
use super::super::extract::{positive_id, Validate};
use super::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use crate::model::{TaskStatus, TaskType};
use crate::store::task::{ListFilter, SortKey};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;

/// `{taskInstanceId}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[serde(rename_all = "camelCase")]
pub struct TaskPath {
    /// Task instance id.
    #[param(minimum = 1)]
    pub task_instance_id: i64,
}

impl Validate for TaskPath {
    fn validate(&self) -> Result<()> {
        positive_id("taskInstanceId", self.task_instance_id).map(drop)
    }
}

/// `{taskInstanceId}` and `{subtaskInstanceId}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[serde(rename_all = "camelCase")]
pub struct SubtaskPath {
    /// Task instance id.
    #[param(minimum = 1)]
    pub task_instance_id: i64,
    /// Subtask instance id (of that task).
    #[param(minimum = 1)]
    pub subtask_instance_id: i64,
}

impl Validate for SubtaskPath {
    fn validate(&self) -> Result<()> {
        positive_id("taskInstanceId", self.task_instance_id)?;
        positive_id("subtaskInstanceId", self.subtask_instance_id).map(drop)
    }
}

/// Filters, page and order of the task list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct TaskListQuery {
    /// Part of the task name (case-insensitive).
    pub name: Option<String>,
    /// Statuses, comma-separated: RUNNING, FAILED, SUCCESSFUL.
    pub status: Option<String>,
    /// MANUAL, SCHEDULED or SYS_SCHEDULED.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub task_type: Option<String>,
    /// Target cluster.
    pub cluster_id: Option<i64>,
    /// Target host.
    pub host_id: Option<i64>,
    /// Target OBServer.
    pub server_id: Option<i64>,
    /// Exact creator name.
    pub creator: Option<String>,
    /// Created at or after this time (RFC 3339, e.g.
    /// `2026-12-01T08:00:00+08:00`).
    pub create_time_from: Option<String>,
    /// Created at or before this time (RFC 3339).
    pub create_time_to: Option<String>,
    /// Finished at or after this time (RFC 3339); excludes RUNNING tasks.
    pub finish_time_from: Option<String>,
    /// Finished at or before this time (RFC 3339); excludes RUNNING tasks.
    pub finish_time_to: Option<String>,
    /// Page number, from 1 (default 1).
    #[param(minimum = 1)]
    pub page: Option<i64>,
    /// Page size, 1 to 2000 (default 10).
    #[param(minimum = 1, maximum = 2000)]
    pub size: Option<i64>,
    /// `key[,asc|desc]` with key one of id, name, status, createTime,
    /// startTime, finishTime (default `id,desc`).
    pub sort: Option<String>,
}

/// Page number (1-based) and size from the query, checked.
pub(crate) fn page_params(page: Option<i64>, size: Option<i64>) -> Result<(i64, i64)> {
    let page = page.unwrap_or(1);
    if page < 1 {
        return Err(Error::invalid("query", "page", page, "must be at least 1"));
    }
    let size = size.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&size) {
        return Err(Error::invalid(
            "query",
            "size",
            size,
            format!("must be between 1 and {MAX_PAGE_SIZE}"),
        ));
    }
    Ok((page, size))
}

const SORT_KEYS: &str = "id, name, status, createTime, startTime, finishTime";

pub(super) fn sort_params(sort: Option<&str>) -> Result<(SortKey, bool)> {
    let Some(sort) = sort.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok((SortKey::Id, true));
    };
    let (key, dir) = match sort.split_once(',') {
        Some((k, d)) => (k.trim(), d.trim()),
        None => (sort, "asc"),
    };
    let key = SortKey::parse(key).ok_or_else(|| {
        Error::invalid(
            "query",
            "sort",
            sort,
            format!("unknown sort key {key:?}; expected one of {SORT_KEYS}"),
        )
    })?;
    let desc = match dir.to_ascii_lowercase().as_str() {
        "asc" => false,
        "desc" => true,
        _ => {
            return Err(Error::invalid(
                "query",
                "sort",
                sort,
                format!("unknown direction {dir:?}; expected asc or desc"),
            ))
        }
    };
    Ok((key, desc))
}

pub(super) fn filter_params(q: &TaskListQuery) -> Result<ListFilter> {
    let mut statuses = Vec::new();
    if let Some(list) = &q.status {
        for s in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let status = s
                .parse::<TaskStatus>()
                .map_err(|e| Error::invalid("query", "status", s, e))?;
            statuses.push(status);
        }
    }
    let task_type = match q.task_type.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(t) => Some(
            t.parse::<TaskType>()
                .map_err(|e| Error::invalid("query", "type", t, e))?,
        ),
    };
    let non_empty = |s: &Option<String>| s.as_ref().filter(|s| !s.is_empty()).cloned();
    let (create_from, create_to) = time_range(
        ("createTimeFrom", &q.create_time_from),
        ("createTimeTo", &q.create_time_to),
    )?;
    let (finish_from, finish_to) = time_range(
        ("finishTimeFrom", &q.finish_time_from),
        ("finishTimeTo", &q.finish_time_to),
    )?;
    Ok(ListFilter {
        name: non_empty(&q.name),
        statuses,
        task_type,
        cluster_id: q.cluster_id,
        host_id: q.host_id,
        server_id: q.server_id,
        creator: non_empty(&q.creator),
        create_from,
        create_to,
        finish_from,
        finish_to,
    })
}

/// An RFC 3339 time of the query named `field`; empty is absent. A `+`
/// of the offset sent unencoded arrives as a space, and is read as `+`.
fn query_time(field: &str, value: &Option<String>) -> Result<Option<DateTime<Utc>>> {
    let Some(v) = value.as_deref().map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let parsed = DateTime::parse_from_rfc3339(v).or_else(|e| match v.rsplit_once(' ') {
        Some((head, offset)) if head.contains('T') => {
            DateTime::parse_from_rfc3339(&format!("{head}+{offset}"))
        }
        _ => Err(e),
    });
    match parsed {
        Ok(t) => Ok(Some(t.with_timezone(&Utc))),
        Err(e) => Err(Error::invalid(
            "query",
            field,
            v,
            format!("not an RFC 3339 time ({e}); e.g. 2026-12-01T08:00:00+08:00"),
        )),
    }
}

/// Inclusive bounds of a time range, each optional.
type TimeRange = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// A `from`..`to` pair of query times; `from` after `to` is refused,
/// naming `from`.
fn time_range(from: (&str, &Option<String>), to: (&str, &Option<String>)) -> Result<TimeRange> {
    let start = query_time(from.0, from.1)?;
    let end = query_time(to.0, to.1)?;
    if let (Some(a), Some(b)) = (start, end) {
        if a > b {
            return Err(Error::invalid(
                "query",
                from.0,
                from.1.as_deref().unwrap_or_default(),
                format!("must not be after {}", to.0),
            ));
        }
    }
    Ok((start, end))
}

/// `runTime` of the log.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct LogQuery {
    /// Only this run's lines (from 1); all runs when absent.
    #[param(minimum = 1)]
    pub run_time: Option<i32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_parses_key_and_direction() {
        assert_eq!(sort_params(None).ok(), Some((SortKey::Id, true)));
        assert_eq!(
            sort_params(Some("createTime,asc")).ok(),
            Some((SortKey::CreateTime, false))
        );
        assert_eq!(sort_params(Some("name")).ok(), Some((SortKey::Name, false)));
        assert_eq!(sort_params(Some("id,DESC")).ok(), Some((SortKey::Id, true)));
        assert!(sort_params(Some("bogus,desc")).is_err());
        assert!(sort_params(Some("id,sideways")).is_err());
    }

    #[test]
    fn page_and_size_are_bounded() {
        assert_eq!(page_params(None, None).ok(), Some((1, 10)));
        assert_eq!(page_params(Some(3), Some(2000)).ok(), Some((3, 2000)));
        assert!(page_params(Some(0), None).is_err());
        assert!(page_params(None, Some(2001)).is_err());
        assert!(page_params(None, Some(0)).is_err());
    }

    #[test]
    fn filters_parse_status_lists() {
        let q = TaskListQuery {
            status: Some("RUNNING, FAILED".into()),
            task_type: Some("MANUAL".into()),
            name: Some(String::new()),
            ..Default::default()
        };
        let f = filter_params(&q).ok().unwrap_or_default();
        assert_eq!(f.statuses, [TaskStatus::Running, TaskStatus::Failed]);
        assert_eq!(f.task_type, Some(TaskType::Manual));
        assert_eq!(f.name, None);
        let bad = TaskListQuery {
            status: Some("RUNNING,DONE".into()),
            ..Default::default()
        };
        assert!(filter_params(&bad).is_err());
    }
}
