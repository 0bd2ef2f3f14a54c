//! The deployment files: docker-compose.yml parses and names the services,
//! images, commands, environment and ports it must; the Dockerfile builds
//! the binary in a multi-stage build. (Docker itself cannot run here.)

use serde_yaml::Value;

fn compose() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml"))
        .expect("docker-compose.yml at the top level");
    serde_yaml::from_str(&text).expect("docker-compose.yml is valid YAML")
}

fn env<'a>(svc: &'a Value, key: &str) -> Option<&'a str> {
    svc["environment"][key].as_str()
}

#[test]
fn compose_names_every_service_it_must() {
    let c = compose();
    let services = c["services"].as_mapping().expect("services");
    let names: Vec<&str> = services.keys().filter_map(Value::as_str).collect();
    for want in [
        "postgres", "serve", "worker-1", "worker-2", "agent-1", "agent-2", "agent-3",
    ] {
        assert!(names.contains(&want), "service {want} missing: {names:?}");
    }
    let s = &c["services"];
    assert!(s["postgres"]["image"]
        .as_str()
        .unwrap()
        .starts_with("postgres:"));
    assert_eq!(s["serve"]["build"].as_str(), Some("."));
    for name in [
        "serve", "worker-1", "worker-2", "agent-1", "agent-2", "agent-3",
    ] {
        assert_eq!(s[name]["image"].as_str(), Some("taskd:latest"), "{name}");
    }
    assert_eq!(s["serve"]["command"][0].as_str(), Some("serve"));
    assert_eq!(
        env(&s["serve"], "TASKD_WORKERS"),
        Some("0"),
        "the API replica runs no workers"
    );
    assert_eq!(env(&s["serve"], "TASKD_LISTEN"), Some("0.0.0.0:8080"));
    assert_eq!(s["serve"]["ports"][0].as_str(), Some("8080:8080"));
    for name in ["serve", "worker-1", "worker-2"] {
        let url = env(&s[name], "DATABASE_URL").unwrap();
        assert!(
            url.starts_with("postgres://") && url.contains("@postgres:5432/"),
            "{name}: {url}"
        );
    }
    for name in ["worker-1", "worker-2"] {
        assert_eq!(s[name]["command"][0].as_str(), Some("worker"));
    }
    for (i, name) in ["agent-1", "agent-2", "agent-3"].iter().enumerate() {
        assert_eq!(s[*name]["command"][0].as_str(), Some("agent"));
        assert_eq!(env(&s[*name], "TASKD_AGENT_LISTEN"), Some("0.0.0.0:9090"));
        assert!(env(&s[*name], "TASKD_AGENT_STATE_DIR").is_some());
        assert_eq!(
            s[*name]["ports"][0].as_str().unwrap(),
            format!("909{}:9090", i + 1)
        );
    }
}

#[test]
fn dockerfile_is_multi_stage_and_needs_no_database() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    assert_eq!(text.lines().filter(|l| l.starts_with("FROM ")).count(), 2);
    assert!(text.contains("cargo build --release --locked"));
    assert!(text.contains("COPY migrations"));
    assert!(
        !text.contains("DATABASE_URL"),
        "the build must not need a database"
    );
}
