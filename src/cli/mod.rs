//! The `killswitch` command line. Each command prints its result on stdout (one JSON object with
//! `--json`), logs go to stderr, and any failure is one plain line and a non-zero exit.

mod analyst;
mod audit;
mod backup;
mod customer;
mod secrets;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::{self, Application, Services};
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::telemetry;

#[derive(Debug, Parser)]
#[command(
    name = "killswitch",
    version,
    about = "MFA-gated remediation of compromised Entra ID accounts, with a tamper-evident audit log"
)]
pub struct Cli {
    /// Configuration file layered over the built-in defaults (environment variables win).
    #[arg(long, global = true, env = "KILLSWITCH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (applies pending migrations first).
    Serve,
    /// Create or upgrade the database schema and register the audit signing key, then exit.
    Migrate,
    /// Onboard customers and set their guard rails.
    #[command(subcommand)]
    Customer(customer::CustomerCommand),
    /// Enroll analysts and manage their credentials.
    #[command(subcommand)]
    Analyst(analyst::AnalystCommand),
    /// Exit 0 when the local service answers /readyz with 200 (for container health checks).
    Healthcheck,
    /// Inspect and verify the audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Manage the secrets kept encrypted at rest.
    #[command(subcommand)]
    Secrets(secrets::SecretsCommand),
    /// Copy the SQLite database into FILE while the service runs, and keep the copy only if
    /// every audit chain in it verifies (PostgreSQL: pg_dump, see docs/operations.md).
    Backup(backup::BackupArgs),
}

/// Runs the command line and maps the outcome to an exit code.
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(Error::Config(lines)) => {
            for line in lines {
                eprintln!("killswitch: configuration: {line}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("killswitch: {}", one_line(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}

/// A bare HTTP/1.0 request to the configured listen address: the runtime image carries no curl,
/// and this is all a health check needs.
async fn healthcheck(settings: &Settings) -> Result<ExitCode> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut address = settings.server.listen;
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream
            .write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(head)
    };
    let head = tokio::time::timeout(std::time::Duration::from_secs(5), exchange)
        .await
        .map_err(|_| Error::Io {
            context: format!("no answer from {address}"),
            source: std::io::ErrorKind::TimedOut.into(),
        })?
        .map_err(|e| Error::io(format!("cannot reach {address}"), e))?;
    if head.ends_with(b" 200") {
        println!("ready");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("not ready: {}", String::from_utf8_lossy(&head));
        Ok(ExitCode::FAILURE)
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let mut settings = Settings::load(cli.config.as_deref())?;
    if !matches!(cli.command, Command::Serve) {
        // Commands print results on stdout; keep stderr for warnings unless RUST_LOG asks more.
        settings.log.level = "warn".to_owned();
    }
    telemetry::init_logging(&settings.log);
    for warning in &settings.warnings {
        tracing::warn!("{warning}");
    }
    match cli.command {
        Command::Serve => serve(settings).await,
        Command::Migrate => migrate(&settings).await,
        Command::Healthcheck => healthcheck(&settings).await,
        Command::Analyst(command) => analyst::run(command, &settings).await,
        Command::Customer(command) => customer::run(command, &settings).await,
        Command::Audit(command) => audit::run(command, &settings).await,
        Command::Secrets(command) => secrets::run(command, &settings).await,
        Command::Backup(args) => backup::run(args, &settings).await,
    }
}

async fn serve(settings: Settings) -> Result<ExitCode> {
    let app = Application::build(settings).await?;
    app.run_until(app::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Opening the services is the migration: it applies pending migrations and registers the key.
async fn migrate(settings: &Settings) -> Result<ExitCode> {
    let services = Services::open(settings).await?;
    println!(
        "database is up to date ({}); audit signing key {}",
        services.store.backend().name(),
        services.audit_key.key_id()
    );
    Ok(ExitCode::SUCCESS)
}

/// The `--json` result: one JSON object on one line, for scripts.
fn print_json(value: &impl serde::Serialize) -> Result<()> {
    let line = serde_json::to_string(value).map_err(|e| Error::Internal(e.to_string()))?;
    println!("{line}");
    Ok(())
}

/// Checks exit 1 on a negative finding, so scripts and health probes can gate on them.
fn exit_code(success: bool) -> ExitCode {
    if success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
