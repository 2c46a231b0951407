//! The `killswitch` binary: parse the command line, run it, turn any failure into one plain line.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    killswitch::cli::main().await
}
