//! The `taskd` binary: parse the command line, set up logging, dispatch.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = taskd::cli::parse_cli();
    let telemetry = match taskd::cli::init_tracing(&cli) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("taskd: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let code = match taskd::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Once, on stderr, where the logs go too.
            eprintln!("taskd: {}", taskd::report::one_line(&e));
            std::process::ExitCode::FAILURE
        }
    };
    // The exporter's flush blocks: off the runtime's threads.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    code
}
