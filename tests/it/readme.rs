//! README.md as a newcomer pastes it: every `sh` block from "## Try it" on,
//! in order, in one bash session against a demo this test starts, with
//! the URL, password and agent addresses the demo printed put where the
//! README says to. Each block must exit 0, and no `curl` may get an HTTP
//! status of 400 or more. A block preceded by
//! `<!-- readme-test: skip: why -->` is not pasted against a demo (it starts
//! a server of its own, say) and is left out, with its reason.
//!
//! `cargo run -q -- ARGS` runs the test's taskd binary with ARGS (what
//! cargo would run, without building under the running test), and bash
//! expands aliases as an interactive shell does.

use crate::support::demo::Demo;
use crate::support::TestDb;
use std::time::Duration;

/// The README's shell blocks from "## Try it" on, each with the line it
/// starts on; skipped blocks are left out.
fn blocks(readme: &str) -> Vec<(usize, String)> {
    let start = readme.find("\n## Try it").expect("a \"Try it\" section");
    let first_line = readme[..start].lines().count() + 1;
    let mut out = Vec::new();
    let mut lines = readme[start..].lines().enumerate().peekable();
    let mut previous = "";
    while let Some((i, line)) = lines.next() {
        if line.trim_start() == "```sh" {
            let skip = previous.trim_start().starts_with("<!-- readme-test: skip:");
            let mut body = String::new();
            for (_, l) in lines.by_ref() {
                if l.trim_start() == "```" {
                    break;
                }
                body.push_str(l);
                body.push('\n');
            }
            if !skip {
                out.push((first_line + i, body));
            }
        }
        if !line.trim().is_empty() {
            previous = line;
        }
    }
    out
}

/// What every block runs under: strict mode, aliases as in an
/// interactive shell, `cargo run` mapped to the binary, and `curl`
/// failing on an HTTP error status.
const PRELUDE: &str = r#"set -euo pipefail
shopt -s expand_aliases
cargo() {
  if [ "$1 $2 $3" = "run -q --" ]; then shift 3; "$TASKD_BIN" "$@"; return; fi
  echo "the README runs cargo $* (only 'cargo run -q --' is mapped)" >&2; return 1
}
curl() {
  local body code
  body=$(mktemp)
  code=$(command curl -o "$body" -w '%{http_code}' "$@") || { cat "$body"; rm -f "$body"; return 1; }
  cat "$body"; rm -f "$body"
  if [ "$code" -ge 400 ]; then echo "HTTP $code from: curl $*" >&2; return 1; fi
}
"#;

#[test]
fn the_readme_blocks_are_found_and_skips_give_a_reason() {
    let readme = include_str!("../../README.md");
    let runnable = blocks(readme);
    assert!(runnable.len() >= 4, "{runnable:?}");
    assert!(runnable[0].1.contains("B=http://127.0.0.1:8080"));
    for line in readme.lines() {
        if let Some(rest) = line.trim().strip_prefix("<!-- readme-test: skip:") {
            assert!(rest.trim_end_matches("-->").trim().len() > 5, "{line}");
        }
    }
}

#[tokio::test]
async fn the_readme_blocks_work_pasted_in_order_against_a_demo() {
    let db = TestDb::new().await;
    let demo = Demo::start(&[("DATABASE_URL", &db.url), ("TASKD_LISTEN", "127.0.0.1:0")])
        .await
        .expect("the demo comes up");
    // "agents on 127.a.b.2-127.a.b.7 port P"
    let line = demo
        .stdout
        .iter()
        .find(|l| l.contains(", agents on "))
        .expect("where the agents are");
    let agents = line.split(", agents on ").nth(1).unwrap();
    let (range, rest) = agents.split_once(" port ").unwrap();
    let port: u16 = rest.split(',').next().unwrap().trim().parse().unwrap();
    let first: std::net::Ipv4Addr = range.split('-').next().unwrap().parse().unwrap();
    let readme = include_str!("../../README.md");
    let mut script = String::from(PRELUDE);
    for (n, (line, body)) in blocks(readme).into_iter().enumerate() {
        let mut body = body
            .replace("http://127.0.0.1:8080", &demo.base)
            .replace("THE_PRINTED_PASSWORD", &demo.password);
        let [a, b, c, d] = first.octets();
        for i in 0..6u8 {
            body = body.replace(
                &format!("127.0.0.{}:62888", 2 + i),
                &format!("{}.{}.{}.{}:{port}", a, b, c, d + i),
            );
        }
        script.push_str(&format!("echo '>>> README block {n} (line {line})'\n"));
        script.push_str(&body);
        script.push_str(&format!("echo '<<< README block {n} ok'\n"));
    }
    let dir = demo.tmp.join("readme");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("readme.sh");
    std::fs::write(&path, &script).unwrap();
    let run = tokio::process::Command::new("bash")
        .arg(&path)
        .current_dir(&dir)
        .env("TASKD_BIN", env!("CARGO_BIN_EXE_taskd"))
        .env_remove("TASKD_URL")
        .env_remove("TASKD_USER")
        .env_remove("TASKD_PASSWORD")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("the README's blocks finish within 10 minutes")
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "a README block failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    let blocks = blocks(readme).len();
    assert!(
        stdout.contains(&format!("<<< README block {} ok", blocks - 1)),
        "{stdout}"
    );
}
