//! The task context that flows from upstream subtasks to downstream ones.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// OCP's context: string values that must agree, lists that are unioned,
/// and the parallel split index of the node that owns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Context {
    #[serde(default)]
    pub string_map: BTreeMap<String, String>,
    #[serde(default)]
    pub list_map: BTreeMap<String, Vec<String>>,
    #[serde(default = "minus_one")]
    pub parallel_idx: i32,
    #[serde(default)]
    pub parallel: bool,
}

fn minus_one() -> i32 {
    -1
}

impl Default for Context {
    fn default() -> Self {
        Context {
            string_map: BTreeMap::new(),
            list_map: BTreeMap::new(),
            parallel_idx: -1,
            parallel: false,
        }
    }
}

/// Two upstreams gave one string key different values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("context conflict on key {key:?}: {left:?} vs {right:?}")]
pub struct ContextConflict {
    pub key: String,
    pub left: String,
    pub right: String,
}

impl Context {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.string_map.get(key).map(String::as_str)
    }

    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.string_map.insert(key.into(), value.into());
    }

    pub fn list(&self, key: &str) -> &[String] {
        self.list_map.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Merges `other` into `self`: string keys must not conflict, lists are
    /// unioned keeping first-seen order. The parallel fields are left alone:
    /// a merged context belongs to a new node.
    pub fn merge(&mut self, other: &Context) -> Result<(), ContextConflict> {
        for (k, v) in &other.string_map {
            match self.string_map.get(k) {
                Some(existing) if existing != v => {
                    return Err(ContextConflict {
                        key: k.clone(),
                        left: existing.clone(),
                        right: v.clone(),
                    })
                }
                Some(_) => {}
                None => {
                    self.string_map.insert(k.clone(), v.clone());
                }
            }
        }
        for (k, values) in &other.list_map {
            let list = self.list_map.entry(k.clone()).or_default();
            for v in values {
                if !list.contains(v) {
                    list.push(v.clone());
                }
            }
        }
        Ok(())
    }

    /// The same context with each list's repeats dropped (first-seen order
    /// kept): what merging it alone gives. Contexts are stored this way, so
    /// a node with one upstream can take that upstream's context as it is.
    pub fn deduped(mut self) -> Context {
        for list in self.list_map.values_mut() {
            let mut seen = std::collections::HashSet::with_capacity(list.len());
            list.retain(|v| seen.insert(v.clone()));
        }
        self
    }

    /// The input of a node with these upstream contexts (merged in order).
    pub fn merge_all<'a>(
        upstreams: impl IntoIterator<Item = &'a Context>,
    ) -> Result<Context, ContextConflict> {
        let mut merged = Context::default();
        for c in upstreams {
            merged.merge(c)?;
        }
        Ok(merged)
    }

    /// True when the task asked not to be rolled back.
    pub fn prohibits_rollback(&self) -> bool {
        self.get(super::ocp::key::PROHIBIT_ROLLBACK) == Some("true")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(strings: &[(&str, &str)], lists: &[(&str, &[&str])]) -> Context {
        let mut c = Context::default();
        for (k, v) in strings {
            c.set(*k, *v);
        }
        for (k, vs) in lists {
            c.list_map
                .insert(k.to_string(), vs.iter().map(|s| s.to_string()).collect());
        }
        c
    }

    #[test]
    fn deduped_is_what_merging_alone_gives() {
        let a = ctx(
            &[("a", "1")],
            &[("ids", &["2", "1", "2", "3", "1"]), ("none", &[])],
        );
        let alone = Context::merge_all([&a]).unwrap();
        let d = a.clone().deduped();
        assert_eq!(d.list("ids"), ["2", "1", "3"]);
        assert_eq!(d.string_map, alone.string_map);
        assert_eq!(d.list_map, alone.list_map);
    }

    #[test]
    fn merge_unions_lists_and_agrees_on_strings() {
        let a = ctx(&[("a", "1"), ("same", "x")], &[("ids", &["1", "2"])]);
        let b = ctx(&[("b", "2"), ("same", "x")], &[("ids", &["2", "3"])]);
        let m = Context::merge_all([&a, &b]).unwrap();
        assert_eq!(m.get("a"), Some("1"));
        assert_eq!(m.get("b"), Some("2"));
        assert_eq!(m.list("ids"), ["1", "2", "3"]);
        assert_eq!(m.parallel_idx, -1);
    }

    #[test]
    fn merge_refuses_conflicting_strings() {
        let a = ctx(&[("k", "1")], &[]);
        let b = ctx(&[("k", "2")], &[]);
        let err = Context::merge_all([&a, &b]).unwrap_err();
        assert_eq!(err.key, "k");
    }

    #[test]
    fn serializes_in_ocp_shape() {
        let c = ctx(&[("k", "v")], &[("server_ids", &["7"])]);
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"stringMap": {"k": "v"}, "listMap": {"server_ids": ["7"]}, "parallelIdx": -1, "parallel": false})
        );
    }
}
