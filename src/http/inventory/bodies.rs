//! The inventory's request bodies and their validation, field by field into
//! the store's new rows; duplicates become 409s naming the field.

use super::super::error::{code, Error, Result, SubError};
use super::NAME_MAX;
use crate::store;
use crate::store::inventory::{AgentStatus, ClusterStatus, NewHost, ServerStatus, ZoneStatus};
use axum::http::StatusCode;
use serde::Deserialize;
use std::net::IpAddr;
use utoipa::ToSchema;

/// A host to add.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateHost {
    /// Unique name, 1 to 128 characters.
    #[schema(min_length = 1, max_length = 128, pattern = r"^\S([\s\S]*\S)?$")]
    pub name: String,
    /// IPv4 address (IPv6 is accepted too).
    #[schema(format = Ipv4)]
    pub ip: String,
    /// Base URL of the host's agent (http or https), e.g. `http://10.0.0.5:62888`.
    #[schema(
        pattern = r"^[hH][tT][tT][pP][sS]?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$"
    )]
    pub agent_url: String,
    /// Known agent state (default UNKNOWN).
    #[serde(default)]
    pub agent_status: Option<AgentStatus>,
}

/// A cluster to add, with its zones and their servers.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateCluster {
    /// Unique name, 1 to 128 characters.
    #[schema(min_length = 1, max_length = 128, pattern = r"^\S([\s\S]*\S)?$")]
    pub name: String,
    /// The cluster id OceanBase knows (positive).
    #[schema(minimum = 1)]
    pub ob_cluster_id: i64,
    /// Default RUNNING.
    #[serde(default)]
    pub status: Option<ClusterStatus>,
    #[serde(default)]
    pub zones: Vec<CreateZone>,
}

/// A zone of a cluster to add.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateZone {
    /// Name, unique within the cluster, 1 to 128 characters.
    #[schema(min_length = 1, max_length = 128, pattern = r"^\S([\s\S]*\S)?$")]
    pub name: String,
    /// Default RUNNING.
    #[serde(default)]
    pub status: Option<ZoneStatus>,
    #[serde(default)]
    pub servers: Vec<CreateServer>,
}

/// A server of a zone to add, on an existing host.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateServer {
    /// An existing host.
    #[schema(minimum = 1)]
    pub host_id: i64,
    /// Default: the host's IP.
    #[serde(default)]
    #[schema(format = Ipv4)]
    pub ip: Option<String>,
    /// 1 to 65535, default 2881; unique per host.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 65535)]
    pub sql_port: Option<i64>,
    /// 1 to 65535, default 2882; unique per host, not sqlPort.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 65535)]
    pub rpc_port: Option<i64>,
    /// Default RUNNING.
    #[serde(default)]
    pub status: Option<ServerStatus>,
}

/// Collects every invalid field of a body before answering.
#[derive(Default)]
struct Check(Vec<SubError>);

impl Check {
    fn fail(&mut self, field: &str, rejected: impl Into<serde_json::Value>, message: &str) {
        self.0.push(SubError {
            object: "body".into(),
            field: field.into(),
            rejected_value: rejected.into(),
            message: message.into(),
        });
    }

    fn name(&mut self, field: &str, value: &str) {
        if value.trim().is_empty() {
            self.fail(field, value, "must not be empty");
        } else if value.chars().count() > NAME_MAX {
            self.fail(field, value, "must be at most 128 characters long");
        } else if value.trim() != value {
            self.fail(field, value, "must not start or end with spaces");
        }
    }

    fn ip(&mut self, field: &str, value: &str) {
        if value.parse::<IpAddr>().is_err() {
            self.fail(field, value, "must be an IPv4 or IPv6 address");
        }
    }

    fn port(&mut self, field: &str, value: i64) {
        if !(1..=65535).contains(&value) {
            self.fail(field, value, "must be a port between 1 and 65535");
        }
    }

    fn finish(self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::invalid_fields(self.0))
        }
    }
}

/// The agent URL as stored: http(s), with a host, no query or fragment, no
/// trailing slash.
fn agent_url(check: &mut Check, value: &str) -> String {
    match url::Url::parse(value) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some_and(|h| !h.is_empty())
                && u.query().is_none()
                && u.fragment().is_none()
                && u.username().is_empty() =>
        {
            u.as_str().trim_end_matches('/').to_string()
        }
        _ => {
            check.fail(
                "agentUrl",
                value,
                "must be an http or https URL with a host, without credentials, query or fragment",
            );
            String::new()
        }
    }
}

impl CreateHost {
    pub(super) fn check(&self) -> Result<NewHost> {
        let mut c = Check::default();
        c.name("name", &self.name);
        c.ip("ip", &self.ip);
        let agent_url = agent_url(&mut c, &self.agent_url);
        c.finish()?;
        Ok(NewHost {
            name: self.name.clone(),
            ip: self.ip.clone(),
            agent_url,
            agent_status: self.agent_status.unwrap_or(AgentStatus::Unknown),
        })
    }
}

impl CreateCluster {
    pub(super) fn check(&self) -> Result<()> {
        let mut c = Check::default();
        c.name("name", &self.name);
        if self.ob_cluster_id < 1 {
            c.fail(
                "obClusterId",
                self.ob_cluster_id,
                "must be a positive integer",
            );
        }
        for (i, z) in self.zones.iter().enumerate() {
            c.name(&format!("zones[{i}].name"), &z.name);
            for (j, s) in z.servers.iter().enumerate() {
                let f = |name: &str| format!("zones[{i}].servers[{j}].{name}");
                if s.host_id < 1 {
                    c.fail(&f("hostId"), s.host_id, "must be a positive integer id");
                }
                if let Some(ip) = &s.ip {
                    c.ip(&f("ip"), ip);
                }
                let sql = s.sql_port.unwrap_or(2881);
                let rpc = s.rpc_port.unwrap_or(2882);
                c.port(&f("sqlPort"), sql);
                c.port(&f("rpcPort"), rpc);
                if sql == rpc {
                    c.fail(&f("rpcPort"), rpc, "must differ from sqlPort");
                }
            }
        }
        c.finish()
    }
}

/// A unique violation as a 409 naming the field; anything else as is.
pub(super) fn duplicate(e: store::Error, field: &str, what: &str) -> Error {
    if e.unique_violation().is_some() {
        Error::refused(
            StatusCode::CONFLICT,
            code::DUPLICATE,
            format!("{what} already exists"),
        )
        .with_target(field)
    } else {
        e.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_urls_are_checked_and_normalized() {
        let mut c = Check::default();
        assert_eq!(
            agent_url(&mut c, "http://10.0.0.5:62888/"),
            "http://10.0.0.5:62888"
        );
        assert_eq!(
            agent_url(&mut c, "https://agent.example/base"),
            "https://agent.example/base"
        );
        assert!(c.0.is_empty());
        for bad in [
            "",
            "10.0.0.5:62888",
            "ftp://x",
            "http://",
            "http://u:p@h",
            "http://h/?q=1",
        ] {
            let mut c = Check::default();
            agent_url(&mut c, bad);
            assert_eq!(c.0.len(), 1, "{bad}");
        }
    }

    #[test]
    fn cluster_bodies_name_every_bad_field() {
        let body: CreateCluster = serde_json::from_value(serde_json::json!({
            "name": " ", "obClusterId": 0,
            "zones": [{"name": "z1", "servers": [{"hostId": 1, "sqlPort": 0, "rpcPort": 70000}]}]
        }))
        .expect("valid shape");
        let Err(Error::Refused(r)) = body.check() else {
            panic!("must be refused");
        };
        let fields: Vec<&str> = r.sub_errors.iter().map(|s| s.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "name",
                "obClusterId",
                "zones[0].servers[0].sqlPort",
                "zones[0].servers[0].rpcPort"
            ]
        );
        assert_eq!(r.target.as_deref(), Some("name"));
    }
}
