//! The `taskd` binary: parse the command line, set up logging, dispatch.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = taskd::cli::Cli::parse();
    taskd::cli::init_tracing(&cli);
    match taskd::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "taskd failed");
            eprintln!("taskd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
