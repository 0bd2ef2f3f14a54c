//! Status and operation enums, stored as the upper-case strings OCP uses.

/// An enum stored as upper-case text: `as_str`, `Display`, `FromStr` naming
/// the choices, `TryFrom<String>` and `Decode` (for sqlx), serde and an
/// OpenAPI schema.
/// Used by the model and by the inventory's statuses.
macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        // Written by hand: utoipa's derive does not see a `serde(rename)`
        // whose text comes from a macro argument, and documented the
        // variants' Rust names ("Running") where the wire has "RUNNING".
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($text),+]))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {
            fn name() -> std::borrow::Cow<'static, str> {
                std::borrow::Cow::Borrowed(stringify!($name))
            }
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        // Decoded from a text column: what `col as "col: Status"` in
        // sqlx's query macros needs. Binds pass `as_str()`.
        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(
                value: sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<'r, sqlx::Postgres>>::decode(value)?;
                Ok(text.parse::<$name>()?)
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                s.parse()
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "unknown {} {:?}; expected one of {}",
                        stringify!($name),
                        other,
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

pub(crate) use string_enum;

string_enum!(TaskStatus {
    Running => "RUNNING",
    Failed => "FAILED",
    Successful => "SUCCESSFUL",
});

string_enum!(TaskOperation {
    Execute => "EXECUTE",
    Retry => "RETRY",
    Rollback => "ROLLBACK",
});

string_enum!(TaskType {
    Manual => "MANUAL",
    Scheduled => "SCHEDULED",
    SysScheduled => "SYS_SCHEDULED",
});

string_enum!(SubtaskStatus {
    Pending => "PENDING",
    Ready => "READY",
    Running => "RUNNING",
    Canceling => "CANCELING",
    Failed => "FAILED",
    Successful => "SUCCESSFUL",
});

string_enum!(SubtaskOperation {
    Execute => "EXECUTE",
    Retry => "RETRY",
    Rollback => "ROLLBACK",
    Skip => "SKIP",
    RollbackSkip => "ROLLBACK_SKIP",
    Cancel => "CANCEL",
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_variant() {
        for s in SubtaskStatus::ALL {
            assert_eq!(s.as_str().parse::<SubtaskStatus>().unwrap(), *s);
        }
        for s in SubtaskOperation::ALL {
            assert_eq!(s.as_str().parse::<SubtaskOperation>().unwrap(), *s);
        }
        for s in TaskStatus::ALL {
            assert_eq!(
                serde_json::to_string(s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
    }

    #[test]
    fn the_openapi_schema_lists_the_wire_texts() {
        use utoipa::PartialSchema;
        let schema = serde_json::to_value(SubtaskOperation::schema()).unwrap();
        let texts: Vec<&str> = SubtaskOperation::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(schema["type"], "string");
        assert_eq!(schema["enum"], serde_json::json!(texts));
        let schema = serde_json::to_value(TaskStatus::schema()).unwrap();
        assert_eq!(
            schema["enum"],
            serde_json::json!(["RUNNING", "FAILED", "SUCCESSFUL"])
        );
    }

    #[test]
    fn unknown_text_names_the_choices() {
        let err = "DONE".parse::<TaskStatus>().unwrap_err();
        assert!(err.contains("RUNNING, FAILED, SUCCESSFUL"), "{err}");
    }
}
