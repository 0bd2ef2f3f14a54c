//! What a failed command prints: one line per error, naming what failed and
//! where, each cause once, and for a bad setting the variable it came from.

use clap::error::{ContextKind, ContextValue, ErrorKind};

/// The error and its causes on one line, `a: b: c`, leaving out a cause
/// whose text the line already holds (sqlx and io errors repeat their
/// source in their own message).
pub fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || line.contains(text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text);
    }
    line
}

/// "PostgreSQL at host:port, database name" for a database URL, never its
/// user or password (a URL that does not parse is described as such).
pub fn database_at(database_url: &str) -> String {
    let Ok(url) = url::Url::parse(database_url) else {
        return "PostgreSQL (the database URL does not parse)".to_string();
    };
    let host = url.host_str().unwrap_or("localhost");
    let port = url.port().unwrap_or(5432);
    let db = url.path().trim_start_matches('/');
    if db.is_empty() {
        format!("PostgreSQL at {host}:{port}")
    } else {
        format!("PostgreSQL at {host}:{port}, database {db}")
    }
}

/// "(from TASKD_WORKERS=x)" when the refused value is that variable's.
pub(crate) fn env_note(
    cmd: &clap::Command,
    err: &clap::Error,
    env: &impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Option<String> {
    if !matches!(
        err.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return None;
    }
    let ContextValue::String(arg) = err.get(ContextKind::InvalidArg)? else {
        return None;
    };
    let ContextValue::String(value) = err.get(ContextKind::InvalidValue)? else {
        return None;
    };
    // "--workers <WORKERS>" -> "workers"
    let long = arg.trim_start_matches('-').split([' ', '=']).next()?;
    let mut commands = vec![cmd];
    while let Some(c) = commands.pop() {
        for a in c.get_arguments() {
            if a.get_long() != Some(long) {
                continue;
            }
            let Some(var) = a.get_env().and_then(|v| v.to_str()) else {
                continue;
            };
            if env(var).is_some_and(|v| v.to_str() == Some(value.as_str())) {
                return Some(format!("(from the environment: {var}={value})"));
            }
        }
        commands.extend(c.get_subcommands());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        );
        #[derive(Debug, thiserror::Error)]
        #[error("error communicating with database: {0}")]
        struct Repeats(#[source] std::io::Error);
        let e = anyhow::Error::new(Repeats(io)).context("cannot migrate");
        assert_eq!(
            one_line(&e),
            "cannot migrate: error communicating with database: Connection refused (os error 111)"
        );
    }

    #[test]
    fn a_database_is_named_by_host_port_and_name_never_by_password() {
        let at = database_at("postgres://admin:s3cret@db.example:6432/taskd");
        assert_eq!(at, "PostgreSQL at db.example:6432, database taskd");
        assert_eq!(
            database_at("postgres://postgres@127.0.0.1/"),
            "PostgreSQL at 127.0.0.1:5432"
        );
        assert!(!database_at("nonsense s3cret").contains("s3cret"));
    }
}
