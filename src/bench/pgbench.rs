//! PostgreSQL's own commit rate on the same machine (`pgbench -N`), the
//! yardstick every figure is reported beside.

use super::*;

pub(super) async fn run_pgbench(args: &BenchArgs, admin: &PgPool) -> anyhow::Result<Option<f64>> {
    if which("pgbench").is_none() {
        emit(json!({"scenario": "pgbench", "skipped": "pgbench is not installed"}));
        return Ok(None);
    }
    let name = format!("taskd_pgbench_{}", std::process::id());
    bench_sql::recreate_database(admin, &name).await?;
    let url = db_url(&args.database_url, &name);
    let init = Command::new("pgbench")
        .args(["-i", "-q", "-s", "1", &url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await?;
    anyhow::ensure!(init.success(), "pgbench -i failed");
    let out = Command::new("pgbench")
        .args([
            "-N",
            "-n",
            "-c",
            "8",
            "-j",
            "2",
            "-T",
            &args.pgbench_seconds.to_string(),
            &url,
        ])
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout);
    let tps = text
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse::<f64>().ok());
    bench_sql::drop_database(admin, &name, true).await?;
    emit(
        json!({"scenario": "pgbench", "mode": "-N -c 8 -j 2", "seconds": args.pgbench_seconds, "tps": tps.map(round2)}),
    );
    Ok(tps)
}

fn which(cmd: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(cmd))
            .find(|p| p.is_file())
    })
}
