//! The OpenAPI document checked by an independent contract tester:
//! schemathesis (PyPI; `.ci/run` installs it when missing, as it installs
//! chromium for the console's tests) generates requests from the document
//! served at /api/v2/openapi.json (fetched without credentials) and sends
//! them to a demo. It fails on any response that violates the document
//! (status, content type, headers, body schema), any schema-valid request
//! the server refuses (a constraint the document does not declare), any
//! invalid one it accepts, and any 5xx. Bounded: a fixed number of
//! examples per operation and a fixed seed, so a run takes minutes and
//! repeats.
//!
//! `SCHEMATHESIS` names the executable (default `schemathesis` on PATH);
//! `TASKD_CONTRACT_EXAMPLES` the examples per operation (default 25).

use crate::support::demo::Demo;
use crate::support::TestDb;
use std::time::Duration;

/// The demo admin's id, far from the small ids the tester tries, so that
/// generated password changes and deletions of users never hit it.
const ADMIN_ID: i64 = 1_000_000_000;

#[tokio::test]
async fn the_openapi_document_is_exact_by_schemathesis() {
    let exe = std::env::var("SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".into());
    let examples = std::env::var("TASKD_CONTRACT_EXAMPLES").unwrap_or_else(|_| "25".into());
    let db = TestDb::new().await;
    sqlx::query(&format!(
        "alter sequence iam_user_id_seq restart with {ADMIN_ID}"
    ))
    .execute(&db.pool)
    .await
    .unwrap();
    let password = format!("contract-{:016x}", rand::random::<u64>());
    let demo = Demo::start(&[
        ("DATABASE_URL", &db.url),
        ("TASKD_LISTEN", "127.0.0.1:0"),
        ("TASKD_ADMIN_USER", "admin"),
        ("TASKD_ADMIN_PASSWORD", &password),
        // Every agent step answers at once, so the tester's many tasks end.
        ("TASKD_RETRY_BACKOFF_MS", "10"),
    ])
    .await
    .expect("the demo comes up");
    // The document needs no credentials.
    let doc = reqwest::get(demo.url("/api/v2/openapi.json"))
        .await
        .unwrap();
    assert_eq!(doc.status(), 200);
    let report = demo.tmp.join("contract");
    let run = tokio::process::Command::new(&exe)
        .arg("run")
        .arg(demo.url("/api/v2/openapi.json"))
        .args(["--url", &demo.base])
        .args(["--auth", &format!("admin:{password}")])
        .args(["--checks", "all"])
        // Stateful checks need links the document does not declare.
        .args([
            "--exclude-checks",
            "use_after_free,ensure_resource_availability",
        ])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", &examples])
        .args(["--seed", "17"])
        .args(["--workers", "2"])
        .args(["--request-timeout", "30"])
        .args(["--suppress-health-check", "all"])
        .arg("--no-shrink")
        .args(["--report-dir", report.to_str().unwrap()])
        .env("NO_COLOR", "1")
        .current_dir(&demo.tmp)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(900), run)
        .await
        .expect("schemathesis finishes within 15 minutes")
        .unwrap_or_else(|e| {
            panic!("cannot run {exe} (`pip install schemathesis`; .ci/run does): {e}")
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis found the document and the API apart ({}):\n{stdout}\n{stderr}",
        out.status
    );
}
