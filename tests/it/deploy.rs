//! The deployment files: docker-compose.yml parses and names the services,
//! images, commands, environment and ports it must; the Dockerfile builds
//! the binary in a multi-stage build. (Docker itself cannot run here.)

use serde_norway::Value;

fn compose() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml"))
        .expect("docker-compose.yml at the top level");
    serde_norway::from_str(&text).expect("docker-compose.yml is valid YAML")
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

#[test]
fn the_image_exposes_its_ports_and_checks_its_health_with_taskd_itself() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    let health = text
        .lines()
        .skip_while(|l| !l.starts_with("HEALTHCHECK"))
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    assert!(health.contains(r#"CMD ["taskd", "health"]"#), "{health}");
    assert!(text.contains("EXPOSE 8080"), "the API port is exposed");
    // The dependencies are built in a layer of their own, before the
    // sources are copied in.
    let deps = text.find("cargo build").expect("a build");
    let sources = text.find("COPY src").expect("the sources");
    assert!(deps < sources, "dependencies first, then the sources");
    let ignore =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.dockerignore")).unwrap();
    let lines: Vec<&str> = ignore.lines().map(str::trim).collect();
    assert!(lines.contains(&"*"), "everything is ignored by default");
    for kept in ["!Cargo.toml", "!Cargo.lock", "!src/", "!migrations/"] {
        assert!(lines.contains(&kept), "{kept} goes into the context");
    }
    assert!(!lines.contains(&"!target/"));
}

#[test]
fn compose_checks_the_health_of_every_http_service_and_keeps_5432_free() {
    let c = compose();
    let s = &c["services"];
    assert!(
        s["postgres"]["ports"].is_null(),
        "PostgreSQL's port is not published (a local PostgreSQL holds 5432)"
    );
    for name in ["serve", "agent-1", "agent-2", "agent-3"] {
        let test = &s[name]["healthcheck"]["test"];
        assert_eq!(test[0].as_str(), Some("CMD"), "{name}");
        assert_eq!(test[1].as_str(), Some("taskd"), "{name}");
        assert_eq!(test[2].as_str(), Some("health"), "{name}");
    }
    for name in ["worker-1", "worker-2"] {
        assert_eq!(
            s[name]["depends_on"]["serve"]["condition"].as_str(),
            Some("service_healthy"),
            "{name} starts once the API (and so its migrations) is ready"
        );
    }
}

/// A one-shot HTTP server on 127.0.0.1:0 that answers every request with
/// `status_line`.
fn answering(status_line: &'static str) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = write!(
                stream,
                "HTTP/1.1 {status_line}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    addr
}

fn health(url: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_taskd"))
        .args(["health", "--url", url, "--timeout-secs", "5"])
        .output()
        .expect("taskd runs")
}

#[test]
fn taskd_health_exits_0_only_on_200_and_names_the_url_otherwise() {
    let ok = format!("http://{}/readyz", answering("200 OK"));
    let out = health(&ok);
    assert!(out.status.success(), "{out:?}");

    let unready = format!("http://{}/readyz", answering("503 Service Unavailable"));
    let out = health(&unready);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&unready) && err.contains("503"),
        "one line naming the URL and the answer: {err}"
    );

    // A port nobody listens on: bind one, then close it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let refused = format!("http://{closed}/readyz");
    let out = health(&refused);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did not answer"), "{err}");
}
