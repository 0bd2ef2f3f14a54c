//! Every route the application serves, as the seeds and this project's API
//! name them: the tests' independent list, checked against the OpenAPI
//! document and the live server.

use reqwest::Method;

/// Every route the application serves.
pub const ROUTES: &[(&str, &str)] = &[
    (
        "post",
        "/api/v2/ob/clusters/{id}/servers/{serverId}/restart",
    ),
    ("post", "/api/v2/ob/clusters/{id}/servers/{serverId}/start"),
    ("post", "/api/v2/ob/clusters/{id}/servers/{serverId}/stop"),
    ("post", "/compute/hosts/{hostId}/agent/restart"),
    ("post", "/api/v2/compute/hosts/{hostId}/agent/restart"),
    ("post", "/api/v2/ob/clusters/{id}/restart"),
    ("post", "/api/v2/ob/clusters/{id}/zones/{zoneName}/restart"),
    ("post", "/api/v2/ob/clusters/{id}/zones/{zoneName}/start"),
    ("post", "/api/v2/ob/clusters/{id}/zones/{zoneName}/stop"),
    ("post", "/compute/hosts/agent/restart"),
    ("post", "/api/v2/compute/hosts/agent/restart"),
    ("get", "/api/v2/tasks/instances"),
    ("get", "/api/v2/tasks/instances/{taskInstanceId}"),
    ("post", "/api/v2/tasks/instances/{taskInstanceId}/retry"),
    ("post", "/api/v2/tasks/instances/{taskInstanceId}/rollback"),
    (
        "get",
        "/api/v2/tasks/instances/{taskInstanceId}/subtasks/{subtaskInstanceId}/log",
    ),
    (
        "post",
        "/api/v2/tasks/instances/{taskInstanceId}/subtasks/{subtaskInstanceId}/retry",
    ),
    (
        "post",
        "/api/v2/tasks/instances/{taskInstanceId}/subtasks/{subtaskInstanceId}/skip",
    ),
    (
        "post",
        "/api/v2/tasks/instances/{taskInstanceId}/subtasks/{subtaskInstanceId}/cancel",
    ),
    ("post", "/api/v2/compute/hosts"),
    ("get", "/api/v2/compute/hosts"),
    ("get", "/api/v2/compute/hosts/{id}"),
    ("post", "/api/v2/ob/clusters"),
    ("get", "/api/v2/ob/clusters"),
    ("get", "/api/v2/ob/clusters/{id}"),
    ("get", "/api/v2/ob/clusters/{id}/servers"),
    ("post", "/api/v2/iam/users"),
    ("get", "/api/v2/iam/users"),
    ("get", "/api/v2/iam/users/{id}"),
    ("delete", "/api/v2/iam/users/{id}"),
    ("put", "/api/v2/iam/users/{id}/roles"),
    ("put", "/api/v2/iam/users/{id}/password"),
    ("get", "/api/v2/iam/roles"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/v2/openapi.json"),
];

/// The method of a [`ROUTES`] entry.
pub fn method_of(method: &str) -> Method {
    Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("an HTTP method")
}
