//! What a failing `taskd` command prints, run as a real process: one line
//! per error naming what failed and where (never a password), no ANSI
//! colours into a pipe, PostgreSQL's NOTICEs not logged as news, and the
//! documented exit codes (1: the command failed, 2: bad command line).

use crate::support::TestDb;
use std::process::{Command, Output};

fn taskd(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_taskd"));
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("taskd runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A port on 127.0.0.1 nobody listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[test]
fn an_unreachable_database_is_one_line_naming_it_and_exit_1() {
    let port = closed_port();
    let url = format!("postgres://someone:s3cret@127.0.0.1:{port}/taskd");
    let out = taskd(&["migrate", "--database-url", &url], &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = stderr(&out);
    assert_eq!(
        err,
        format!(
            "taskd: cannot apply the migrations to PostgreSQL at 127.0.0.1:{port}, database taskd: \
             error communicating with database: Connection refused (os error 111)\n"
        ),
        "exactly one line, each cause once"
    );
    assert!(!err.contains("s3cret"), "never the password");
}

#[test]
fn a_bad_value_from_the_environment_names_the_variable_and_exits_2() {
    let out = taskd(&["serve"], &[("TASKD_WORKERS", "x")]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = stderr(&out);
    let first = err.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        "error: invalid value 'x' for '--workers <WORKERS>': invalid digit found in string \
         (from the environment: TASKD_WORKERS=x)"
    );
    // The same value as a flag is the flag's fault.
    let out = taskd(&["serve", "--workers", "x"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!stderr(&out).contains("TASKD_WORKERS"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_into_a_pipe_have_no_colours_and_no_postgres_notices() {
    let db = TestDb::new().await;
    let url = db.url.clone();
    // The database is migrated already: refinery's "relation already
    // exists, skipping" NOTICE would come now.
    let out = tokio::task::spawn_blocking(move || taskd(&["migrate", "--database-url", &url], &[]))
        .await
        .expect("join");
    assert!(out.status.success(), "{out:?}");
    let err = stderr(&out);
    assert!(err.contains("migrations applied"), "{err}");
    assert!(!err.contains('\u{1b}'), "no ANSI escape codes: {err:?}");
    assert!(!err.contains("NOTICE"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_listen_address_is_refused_before_the_database_is_touched() {
    let name = format!("taskd_never_{:08x}", rand::random::<u32>());
    let admin = crate::support::admin_url();
    let url = match admin.rfind('/') {
        Some(i) => format!("{}/{name}", &admin[..i]),
        None => format!("{admin}/{name}"),
    };
    let out = tokio::task::spawn_blocking(move || {
        taskd(
            &["serve", "--listen", "notanaddress", "--database-url", &url],
            &[],
        )
    })
    .await
    .expect("join");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        stderr(&out),
        "taskd: cannot listen on notanaddress: invalid socket address\n"
    );
    let pool = sqlx::PgPool::connect(&admin).await.expect("admin");
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
            .bind(&name)
            .fetch_one(&pool)
            .await
            .expect("query");
    assert!(!exists, "the database was not created");
}

#[test]
fn a_database_that_never_answers_is_given_up_on_with_its_name() {
    // Accepts connections and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let holder = std::thread::spawn(move || {
        let held: Vec<_> = silent.incoming().take(4).flatten().collect();
        std::thread::sleep(std::time::Duration::from_secs(30));
        drop(held);
    });
    let url = format!("postgres://postgres@127.0.0.1:{port}/taskd");
    let out = taskd(&["migrate", "--database-url", &url], &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        stderr(&out),
        format!(
            "taskd: cannot apply the migrations to PostgreSQL at 127.0.0.1:{port}, database taskd: \
             no answer within 10 s\n"
        )
    );
    drop(holder);
}
