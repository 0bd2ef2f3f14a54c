//! The `taskd` binary: parse the command line, set up logging, dispatch.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = taskd::cli::parse_cli();
    taskd::cli::init_tracing(&cli);
    match taskd::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Once, on stderr, where the logs go too.
            eprintln!("taskd: {}", taskd::report::one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}
