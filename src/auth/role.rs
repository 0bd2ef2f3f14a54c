//! Roles, permissions and the authenticated principal: which role allows
//! which permission, and whether a principal holds a permission (on a
//! cluster, for server operations).
//!
//! | role | allows |
//! |---|---|
//! | ADMIN | everything, including inventory writes and user management |
//! | CLUSTER_MANAGER | server restart, start and stop, on every cluster or on the listed ones |
//! | HOST_MANAGER | host agent restart |
//! | TASK_VIEWER | task list, task detail, subtask log |
//! | TASK_MANAGER | task retry and rollback, subtask retry, skip and cancel |
//!
//! Every authenticated user, whatever its roles, may read the inventory and
//! the OpenAPI document ([`Permission::InventoryRead`]). Roles do not imply
//! each other (ADMIN aside): a TASK_MANAGER who should also see tasks is
//! given TASK_VIEWER as well.

use super::{Error, Result};
use crate::store::user::GrantRow;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use utoipa::ToSchema;

/// A role a user may hold.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    /// Everything: inventory writes, users and roles, and every other role's
    /// permissions.
    Admin,
    /// Restart, start and stop servers, on every cluster or on listed ones.
    ClusterManager,
    /// Restart host agents.
    HostManager,
    /// Read tasks, subtasks and their logs.
    TaskViewer,
    /// Retry and roll back tasks; retry, skip and cancel subtasks.
    TaskManager,
}

impl Role {
    pub const ALL: &'static [Role] = &[
        Role::Admin,
        Role::ClusterManager,
        Role::HostManager,
        Role::TaskViewer,
        Role::TaskManager,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "ADMIN",
            Role::ClusterManager => "CLUSTER_MANAGER",
            Role::HostManager => "HOST_MANAGER",
            Role::TaskViewer => "TASK_VIEWER",
            Role::TaskManager => "TASK_MANAGER",
        }
    }

    /// What the role is for, in one sentence.
    pub fn description(self) -> &'static str {
        match self {
            Role::Admin => {
                "Everything: inventory writes, users and roles, and every other role's permissions."
            }
            Role::ClusterManager => {
                "Restart, start and stop servers, on every cluster or only on the listed clusters."
            }
            Role::HostManager => "Restart host agents.",
            Role::TaskViewer => "List and read tasks and read subtask logs.",
            Role::TaskManager => "Retry and roll back tasks; retry, skip and cancel subtasks.",
        }
    }

    /// True when a grant of this role may be limited to clusters.
    pub fn cluster_scoped(self) -> bool {
        self == Role::ClusterManager
    }

    /// True when this role allows `permission` (on the clusters of its
    /// grant, for a cluster-scoped permission).
    pub fn allows(self, permission: Permission) -> bool {
        use Permission as P;
        match self {
            Role::Admin => true,
            Role::ClusterManager => permission == P::ServerOperate,
            Role::HostManager => permission == P::AgentRestart,
            Role::TaskViewer => permission == P::TaskRead,
            Role::TaskManager => permission == P::TaskManage,
        }
    }

    /// The permissions this role allows.
    pub fn permissions(self) -> Vec<Permission> {
        Permission::ALL
            .iter()
            .copied()
            .filter(|p| *p == Permission::InventoryRead || self.allows(*p))
            .collect()
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Role::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
                format!("unknown role {s:?}; expected one of {}", names.join(", "))
            })
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Permission {
    /// Read hosts, clusters, servers and the OpenAPI document: every
    /// authenticated user.
    InventoryRead,
    /// Add hosts and clusters.
    InventoryWrite,
    /// Create, read, delete users and set their roles and passwords.
    UserManage,
    /// Restart, start and stop the servers of a cluster.
    ServerOperate,
    /// Restart a host's agent.
    AgentRestart,
    /// List and read tasks, read subtask logs.
    TaskRead,
    /// Retry and roll back tasks; retry, skip and cancel subtasks.
    TaskManage,
}

impl Permission {
    pub const ALL: &'static [Permission] = &[
        Permission::InventoryRead,
        Permission::InventoryWrite,
        Permission::UserManage,
        Permission::ServerOperate,
        Permission::AgentRestart,
        Permission::TaskRead,
        Permission::TaskManage,
    ];

    /// True when the permission is held per cluster.
    pub fn cluster_scoped(self) -> bool {
        self == Permission::ServerOperate
    }

    /// The roles that allow it, for messages ("needs ... or ADMIN").
    fn roles(self) -> Vec<Role> {
        Role::ALL
            .iter()
            .copied()
            .filter(|r| *r != Role::Admin && r.allows(self))
            .chain(std::iter::once(Role::Admin))
            .collect()
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Permission::InventoryRead => "INVENTORY_READ",
            Permission::InventoryWrite => "INVENTORY_WRITE",
            Permission::UserManage => "USER_MANAGE",
            Permission::ServerOperate => "SERVER_OPERATE",
            Permission::AgentRestart => "AGENT_RESTART",
            Permission::TaskRead => "TASK_READ",
            Permission::TaskManage => "TASK_MANAGE",
        };
        f.write_str(s)
    }
}

/// One role of a user as the API shows and takes it: the role and, for a
/// CLUSTER_MANAGER limited to some clusters, their ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleGrant {
    pub role: Role,
    /// CLUSTER_MANAGER only: the clusters the role is limited to (at least
    /// one). Absent: every cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ids: Option<Vec<i64>>,
}

impl RoleGrant {
    /// A grant everywhere.
    pub fn global(role: Role) -> Self {
        RoleGrant {
            role,
            cluster_ids: None,
        }
    }

    /// A CLUSTER_MANAGER grant limited to `clusters`.
    pub fn clusters(clusters: impl IntoIterator<Item = i64>) -> Self {
        RoleGrant {
            role: Role::ClusterManager,
            cluster_ids: Some(clusters.into_iter().collect()),
        }
    }
}

impl fmt::Display for RoleGrant {
    /// `ROLE` or `CLUSTER_MANAGER:1,2` (the command line's syntax).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cluster_ids {
            None => f.write_str(self.role.as_str()),
            Some(ids) => {
                let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
                write!(f, "{}:{}", self.role, ids.join(","))
            }
        }
    }
}

impl FromStr for RoleGrant {
    type Err = String;
    /// `ROLE` or `CLUSTER_MANAGER:1,2`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (role, clusters) = match s.split_once(':') {
            Some((r, c)) => (r, Some(c)),
            None => (s, None),
        };
        let role: Role = role.trim().to_ascii_uppercase().parse()?;
        let cluster_ids = clusters
            .map(|c| {
                c.split(',')
                    .map(|id| {
                        id.trim()
                            .parse::<i64>()
                            .map_err(|_| format!("{id:?} is not a cluster id"))
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()
            })
            .transpose()?;
        Ok(RoleGrant { role, cluster_ids })
    }
}

/// Checks a list of grants (the `roles` field of a request) and turns it
/// into rows: at least one role, each role once, cluster ids only for
/// CLUSTER_MANAGER, at least one and all positive when given.
pub fn grant_rows(grants: &[RoleGrant]) -> Result<Vec<GrantRow>> {
    let invalid = |field: String, message: String| Error::Invalid { field, message };
    if grants.is_empty() {
        return Err(invalid(
            "roles".into(),
            "must list at least one role".into(),
        ));
    }
    let mut seen = BTreeSet::new();
    let mut rows = Vec::new();
    for (i, g) in grants.iter().enumerate() {
        if !seen.insert(g.role) {
            return Err(invalid(
                format!("roles[{i}].role"),
                format!("{} is listed twice; list its clusters in one entry", g.role),
            ));
        }
        match &g.cluster_ids {
            None => rows.push(GrantRow {
                role: g.role.as_str().to_string(),
                cluster_id: None,
            }),
            Some(_) if !g.role.cluster_scoped() => {
                return Err(invalid(
                    format!("roles[{i}].clusterIds"),
                    format!(
                        "only CLUSTER_MANAGER is limited to clusters, not {}",
                        g.role
                    ),
                ))
            }
            Some(ids) if ids.is_empty() => {
                return Err(invalid(
                    format!("roles[{i}].clusterIds"),
                    "must list at least one cluster id; leave it out for every cluster".into(),
                ))
            }
            Some(ids) => {
                if let Some(bad) = ids.iter().find(|id| **id < 1) {
                    return Err(invalid(
                        format!("roles[{i}].clusterIds"),
                        format!("{bad} is not a cluster id (ids are positive integers)"),
                    ));
                }
                let unique: BTreeSet<i64> = ids.iter().copied().collect();
                rows.extend(unique.into_iter().map(|id| GrantRow {
                    role: g.role.as_str().to_string(),
                    cluster_id: Some(id),
                }));
            }
        }
    }
    Ok(rows)
}

/// Stored rows back into the API's grants, one per role, in role order.
pub fn grants_of_rows(rows: &[GrantRow]) -> Result<Vec<RoleGrant>> {
    let mut grants: Vec<RoleGrant> = Vec::new();
    for row in rows {
        let role: Role = crate::store::parse(&row.role)?;
        match grants.iter_mut().find(|g| g.role == role) {
            Some(g) => match (&mut g.cluster_ids, row.cluster_id) {
                // An unscoped row wins over cluster rows.
                (None, _) => {}
                (ids @ Some(_), None) => *ids = None,
                (Some(ids), Some(id)) => ids.push(id),
            },
            None => grants.push(RoleGrant {
                role,
                cluster_ids: row.cluster_id.map(|id| vec![id]),
            }),
        }
    }
    grants.sort_by_key(|g| g.role);
    for g in &mut grants {
        if let Some(ids) = &mut g.cluster_ids {
            ids.sort_unstable();
            ids.dedup();
        }
    }
    Ok(grants)
}

/// The authenticated caller: who it is and what it was granted. The auth
/// middleware puts it into the request's extensions; handlers take it as
/// an extractor (`http::extract::Caller`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: i64,
    /// The user's name: recorded as the creator of the tasks it submits.
    pub name: String,
    pub grants: Vec<RoleGrant>,
}

impl Principal {
    /// True when the principal holds `permission`; for a cluster-scoped
    /// permission, on `cluster` (None: on an unknown cluster, which only an
    /// unscoped grant covers).
    pub fn allows(&self, permission: Permission, cluster: Option<i64>) -> bool {
        if permission == Permission::InventoryRead {
            return true;
        }
        self.grants.iter().any(|g| {
            g.role.allows(permission)
                && (g.role == Role::Admin
                    || !permission.cluster_scoped()
                    || match &g.cluster_ids {
                        None => true,
                        Some(ids) => cluster.is_some_and(|c| ids.contains(&c)),
                    })
        })
    }

    /// [`Principal::allows`], or 403 naming what is missing.
    pub fn check(&self, permission: Permission, cluster: Option<i64>) -> Result<()> {
        if self.allows(permission, cluster) {
            return Ok(());
        }
        let roles: Vec<&str> = permission.roles().iter().map(|r| r.as_str()).collect();
        let on = match (permission.cluster_scoped(), cluster) {
            (true, Some(c)) => format!(" on cluster {c}"),
            (true, None) => " on this cluster".to_string(),
            _ => String::new(),
        };
        Err(Error::Forbidden(format!(
            "user {:?} may not do this: it needs {}{on} (role {})",
            self.name,
            permission,
            roles.join(" or ")
        )))
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.grants.iter().any(|g| g.role == role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(grants: Vec<RoleGrant>) -> Principal {
        Principal {
            user_id: 1,
            name: "u".into(),
            grants,
        }
    }

    #[test]
    fn each_role_allows_exactly_its_permissions() {
        use Permission as P;
        let expected = [
            (Role::Admin, P::ALL.to_vec()),
            (
                Role::ClusterManager,
                vec![P::InventoryRead, P::ServerOperate],
            ),
            (Role::HostManager, vec![P::InventoryRead, P::AgentRestart]),
            (Role::TaskViewer, vec![P::InventoryRead, P::TaskRead]),
            (Role::TaskManager, vec![P::InventoryRead, P::TaskManage]),
        ];
        for (role, perms) in expected {
            assert_eq!(role.permissions(), perms, "{role}");
            let p = principal(vec![RoleGrant::global(role)]);
            for perm in P::ALL {
                assert_eq!(
                    p.allows(*perm, Some(1)),
                    perms.contains(perm),
                    "{role} {perm}"
                );
            }
        }
    }

    #[test]
    fn a_cluster_limited_grant_covers_only_its_clusters() {
        let p = principal(vec![RoleGrant::clusters([2, 5])]);
        assert!(p.allows(Permission::ServerOperate, Some(2)));
        assert!(p.allows(Permission::ServerOperate, Some(5)));
        assert!(!p.allows(Permission::ServerOperate, Some(3)));
        assert!(!p.allows(Permission::ServerOperate, None));
        let e = p.check(Permission::ServerOperate, Some(3)).unwrap_err();
        assert!(e.to_string().contains("cluster 3"), "{e}");
        let all = principal(vec![RoleGrant::global(Role::ClusterManager)]);
        assert!(all.allows(Permission::ServerOperate, None));
        let admin = principal(vec![RoleGrant::global(Role::Admin)]);
        assert!(admin.allows(Permission::ServerOperate, None));
    }

    #[test]
    fn grants_are_checked_and_round_trip_through_rows() {
        assert!(grant_rows(&[]).is_err());
        let twice = [
            RoleGrant::global(Role::TaskViewer),
            RoleGrant::global(Role::TaskViewer),
        ];
        assert!(grant_rows(&twice).is_err());
        let scoped_viewer = RoleGrant {
            role: Role::TaskViewer,
            cluster_ids: Some(vec![1]),
        };
        assert!(grant_rows(&[scoped_viewer]).is_err());
        assert!(grant_rows(&[RoleGrant::clusters([])]).is_err());
        assert!(grant_rows(&[RoleGrant::clusters([0])]).is_err());
        let grants = vec![
            RoleGrant::clusters([3, 1, 3]),
            RoleGrant::global(Role::TaskViewer),
        ];
        let rows = grant_rows(&grants).expect("valid");
        assert_eq!(rows.len(), 3);
        let back = grants_of_rows(&rows).expect("parse");
        assert_eq!(
            back,
            vec![
                RoleGrant::clusters([1, 3]),
                RoleGrant::global(Role::TaskViewer)
            ]
        );
    }

    #[test]
    fn grants_parse_from_the_command_line_syntax() {
        let g: RoleGrant = "cluster_manager:1, 2".parse().expect("parse");
        assert_eq!(g, RoleGrant::clusters([1, 2]));
        assert_eq!(g.to_string(), "CLUSTER_MANAGER:1,2");
        let g: RoleGrant = "ADMIN".parse().expect("parse");
        assert_eq!(g, RoleGrant::global(Role::Admin));
        assert!("ROOT".parse::<RoleGrant>().is_err());
        assert!("CLUSTER_MANAGER:x".parse::<RoleGrant>().is_err());
    }
}
