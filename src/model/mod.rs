//! Domain vocabulary: ids, statuses, operations, the context and the legal
//! transitions between states, OCP's context keys ([`ocp`]). Pure: no I/O
//! here.

mod context;
pub mod ocp;
mod status;
pub mod transitions;

pub use context::{Context, ContextConflict};
pub(crate) use status::string_enum;
pub use status::{SubtaskOperation, SubtaskStatus, TaskOperation, TaskStatus, TaskType};

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($name:ident) => {
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(TaskId);
id_type!(SubtaskId);
