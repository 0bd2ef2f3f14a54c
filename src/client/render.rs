//! How the client shows things: tables for lists and tasks, and the live
//! progress of a running task.

use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::HashMap;
use std::io::Write;

/// Left-aligned columns under a header, two spaces apart.
pub(super) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// "1.2s" from start to finish (or to `now` while it runs); "-" unstarted.
fn took(start: &Value, finish: &Value, now: DateTime<Utc>) -> String {
    let Some(start) = time(start) else {
        return "-".to_string();
    };
    let end = time(finish).unwrap_or(now);
    let ms = (end - start).num_milliseconds().max(0);
    if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    }
}

/// A page of tasks and its counts.
pub(super) fn task_list(data: &Value) -> String {
    let empty = Vec::new();
    let rows: Vec<Vec<String>> = data["contents"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|t| {
            vec![
                text(&t["id"]),
                text(&t["name"]),
                text(&t["status"]),
                text(&t["operation"]),
                text(&t["creator"]),
                text(&t["createTime"]),
                took(&t["startTime"], &t["finishTime"], Utc::now()),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "ID",
            "NAME",
            "STATUS",
            "OPERATION",
            "CREATOR",
            "CREATED",
            "TOOK",
        ],
        &rows,
    );
    let page = &data["page"];
    out.push_str(&format!(
        "page {} of {}, {} tasks\n",
        text(&page["number"]),
        text(&page["totalPages"]),
        text(&page["totalElements"])
    ));
    out
}

/// A task's header line and a table of its subtasks.
pub(super) fn task(t: &Value) -> String {
    let mut out = format!(
        "task {} {}: {} ({}), created by {} at {}\n",
        text(&t["id"]),
        text(&t["name"]),
        text(&t["status"]),
        text(&t["operation"]),
        text(&t["creator"]),
        text(&t["createTime"]),
    );
    let empty = Vec::new();
    let rows: Vec<Vec<String>> = t["subtasks"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|s| {
            vec![
                text(&s["id"]),
                text(&s["name"]),
                text(&s["status"]),
                text(&s["runTime"]),
                took(&s["startTime"], &s["finishTime"], Utc::now()),
            ]
        })
        .collect();
    out.push_str(&table(&["ID", "SUBTASK", "STATUS", "RUN", "TOOK"], &rows));
    out
}

/// The live display of a task while `--wait` follows it.
pub(super) struct Progress {
    terminal: bool,
    /// Lines drawn last time (a terminal redraws over them).
    drawn: usize,
    /// Last status seen per subtask (elsewhere a line is printed per change).
    seen: HashMap<i64, String>,
    task_status: Option<String>,
}

const BAR: usize = 30;

impl Progress {
    pub(super) fn new(terminal: bool) -> Progress {
        Progress {
            terminal,
            drawn: 0,
            seen: HashMap::new(),
            task_status: None,
        }
    }

    pub(super) fn show(
        &mut self,
        task: &Value,
        now: DateTime<Utc>,
        out: &mut dyn Write,
    ) -> std::io::Result<()> {
        let empty = Vec::new();
        let subtasks = task["subtasks"].as_array().unwrap_or(&empty);
        let total = subtasks.len();
        let done = subtasks
            .iter()
            .filter(|s| s["status"] == "SUCCESSFUL")
            .count();
        let id = text(&task["id"]);
        let status = text(&task["status"]);
        let took_all = took(&task["startTime"], &task["finishTime"], now);
        if self.terminal {
            let filled = (done * BAR).checked_div(total).unwrap_or(0);
            let mut lines = vec![format!(
                "task {id} {}  [{}{}] {done}/{total}  {status}  {took_all}",
                text(&task["name"]),
                "#".repeat(filled),
                "-".repeat(BAR - filled),
            )];
            for s in subtasks {
                lines.push(format!(
                    "  {:<10}  {}  {}",
                    text(&s["status"]),
                    text(&s["name"]),
                    took(&s["startTime"], &s["finishTime"], now),
                ));
            }
            if self.drawn > 0 {
                // Back to the first line drawn, and clear what follows.
                write!(out, "\x1b[{}F\x1b[J", self.drawn)?;
            }
            for l in &lines {
                writeln!(out, "{l}")?;
            }
            self.drawn = lines.len();
        } else {
            for s in subtasks {
                let sid = s["id"].as_i64().unwrap_or_default();
                let st = text(&s["status"]);
                if self.seen.get(&sid) != Some(&st) {
                    writeln!(out, "task {id} subtask {sid} {}: {st}", text(&s["name"]))?;
                    self.seen.insert(sid, st);
                }
            }
            if self.task_status.as_deref() != Some(status.as_str()) && status != "RUNNING" {
                writeln!(
                    out,
                    "task {id} {status} in {took_all} ({done}/{total} subtasks)"
                )?;
            }
        }
        self.task_status = Some(status);
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task(statuses: &[&str], status: &str) -> Value {
        json!({
            "id": 7, "name": "Restart", "status": status,
            "startTime": "2026-01-01T00:00:00.000Z",
            "subtasks": statuses.iter().enumerate().map(|(i, s)| json!({
                "id": i + 1, "name": format!("step {}", i + 1), "status": s,
            })).collect::<Vec<_>>(),
        })
    }

    #[test]
    fn a_table_aligns_its_columns() {
        let t = table(
            &["ID", "NAME"],
            &[
                vec!["1".into(), "a".into()],
                vec!["100".into(), "bb".into()],
            ],
        );
        assert_eq!(t, "ID   NAME\n1    a\n100  bb\n");
    }

    #[test]
    fn elsewhere_than_a_terminal_a_line_per_change() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:02Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut p = Progress::new(false);
        let mut out = Vec::new();
        p.show(&task(&["RUNNING", "PENDING"], "RUNNING"), now, &mut out)
            .unwrap();
        p.show(&task(&["RUNNING", "PENDING"], "RUNNING"), now, &mut out)
            .unwrap();
        p.show(
            &task(&["SUCCESSFUL", "SUCCESSFUL"], "SUCCESSFUL"),
            now,
            &mut out,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "task 7 subtask 1 step 1: RUNNING\n\
             task 7 subtask 2 step 2: PENDING\n\
             task 7 subtask 1 step 1: SUCCESSFUL\n\
             task 7 subtask 2 step 2: SUCCESSFUL\n\
             task 7 SUCCESSFUL in 2.0s (2/2 subtasks)\n"
        );
    }

    #[test]
    fn on_a_terminal_the_display_is_redrawn_in_place_with_a_bar() {
        let now = Utc::now();
        let mut p = Progress::new(true);
        let mut out = Vec::new();
        p.show(&task(&["SUCCESSFUL", "RUNNING"], "RUNNING"), now, &mut out)
            .unwrap();
        let first = String::from_utf8(out.clone()).unwrap();
        assert!(
            first.starts_with("task 7 Restart  [###############---------------] 1/2  RUNNING"),
            "{first}"
        );
        out.clear();
        p.show(
            &task(&["SUCCESSFUL", "SUCCESSFUL"], "SUCCESSFUL"),
            now,
            &mut out,
        )
        .unwrap();
        let second = String::from_utf8(out).unwrap();
        assert!(
            second.starts_with("\x1b[3F\x1b[J"),
            "three lines redrawn: {second:?}"
        );
        assert!(second.contains("2/2  SUCCESSFUL"));
    }
}
