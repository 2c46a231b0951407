//! `killswitch backup FILE`: a consistent copy of the SQLite database, taken while the service
//! runs, kept only once every audit chain in it verifies. PostgreSQL is backed up with its own
//! tools (docs/operations.md).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use secrecy::ExposeSecret;
use serde_json::json;

use super::audit::{print_reports, report_json};
use super::print_json;
use crate::audit::AuditKey;
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::reports::check::{self, ChainReport};
use crate::store::{self, Backend, StoreOptions, sqlite};

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The file to write; a file that exists already is never overwritten.
    file: PathBuf,
    #[arg(long)]
    json: bool,
}

pub async fn run(args: BackupArgs, settings: &Settings) -> Result<ExitCode> {
    let url = settings.database.url.expose_secret();
    if Backend::from_url(url)? == Backend::Postgres {
        return Err(Error::InvalidInput(
            "backup copies the SQLite database only; back up PostgreSQL with `pg_dump --format=custom` (see docs/operations.md)"
                .to_owned(),
        ));
    }
    let target = target_path(&args.file)?;
    refuse_existing(&target)?;
    let partial = Partial::create(&target)?;
    sqlite::vacuum_into(url, partial.path()).await?;
    let reports = verify_copy(partial.path(), settings).await?;
    if let Some((chain, broken)) = reports
        .iter()
        .find_map(|r| r.result.as_ref().err().map(|b| (&r.chain, b)))
    {
        return Err(Error::Conflict(format!(
            "the copy's chain {chain} does not verify ({broken}); it was deleted: run `killswitch audit check`"
        )));
    }
    partial.publish(&target)?;
    let bytes = std::fs::metadata(&target)
        .map_err(|e| Error::io(format!("cannot read {}", target.display()), e))?
        .len();
    if args.json {
        let chains: Vec<_> = reports.iter().map(report_json).collect();
        print_json(&json!({
            "path": target.display().to_string(),
            "bytes": bytes,
            "intact": true,
            "chains": chains,
        }))?;
    } else {
        println!(
            "backed up to {} ({bytes} bytes); every chain of the copy verified:",
            target.display()
        );
        print_reports(&reports);
    }
    Ok(ExitCode::SUCCESS)
}

/// `file` made absolute through its folder, which must exist. An absolute name also keeps
/// SQLite from reading it as a `file:` URI.
fn target_path(file: &Path) -> Result<PathBuf> {
    let name = file
        .file_name()
        .ok_or_else(|| Error::InvalidInput(format!("{} does not name a file", file.display())))?;
    let folder = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let folder = std::fs::canonicalize(folder).map_err(|e| {
        Error::io(
            format!("cannot write a backup into {}", folder.display()),
            e,
        )
    })?;
    Ok(folder.join(name))
}

fn refuse_existing(target: &Path) -> Result<()> {
    // Also a dangling symbolic link: writing through it would create a file elsewhere.
    if std::fs::symlink_metadata(target).is_ok() {
        return Err(exists(target));
    }
    Ok(())
}

fn exists(target: &Path) -> Error {
    Error::Conflict(format!(
        "{} exists; backup never overwrites a file: give a new name",
        target.display()
    ))
}

/// Verifies every chain of the copy at `path`, opened read-only, with the keys registered in
/// it and the configured signing key (as `audit check` does).
async fn verify_copy(path: &Path, settings: &Settings) -> Result<Vec<ChainReport>> {
    let options = StoreOptions {
        max_connections: 1,
        acquire_timeout: settings.database.acquire_timeout,
        ..StoreOptions::default()
    };
    let copy = match store::open(&sqlite::read_only_url(path)?, options).await {
        Err(Error::SchemaBehind { pending }) => {
            return Err(Error::Conflict(format!(
                "the database's schema is {pending} migration(s) behind this release: back it up with the release that runs it"
            )));
        }
        opened => opened?,
    };
    let configured = AuditKey::load(&settings.audit.signing_key_file)
        .ok()
        .map(|k| k.public_key());
    let keys = check::keyring(copy.as_ref(), configured).await?;
    check::check_store(copy.as_ref(), &keys, None).await
}

/// The copy while it is written and verified: a hidden name beside the target, removed (with
/// any companion file SQLite made) unless it is published under the target's name.
struct Partial {
    path: PathBuf,
    published: bool,
}

impl Partial {
    fn create(target: &Path) -> Result<Partial> {
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let path = target.with_file_name(format!(".{name}.partial-{}", &suffix[..12]));
        // Created empty and private first (`VACUUM INTO` accepts an empty file): the copy holds
        // the audit log and sealed secrets.
        crate::files::precreate_private_file(&path)?;
        Ok(Partial {
            path,
            published: false,
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }

    /// Gives the verified copy the target's name. A hard link fails rather than replace a file
    /// made there meanwhile (the hidden name then goes with `self`); where links are not
    /// supported, a rename after a last check.
    fn publish(mut self, target: &Path) -> Result<()> {
        match std::fs::hard_link(&self.path, target) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(exists(target));
            }
            Err(_) => {
                refuse_existing(target)?;
                std::fs::rename(&self.path, target)
                    .map_err(|e| Error::io(format!("cannot write {}", target.display()), e))?;
                self.published = true;
            }
        }
        sync_folder(target)
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if self.published {
            return;
        }
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut file = self.path.as_os_str().to_owned();
            file.push(suffix);
            let _ = std::fs::remove_file(&file);
        }
    }
}

/// Makes the new name durable, so a crash just after the report does not lose the file.
fn sync_folder(target: &Path) -> Result<()> {
    #[cfg(unix)]
    if let Some(folder) = target.parent() {
        std::fs::File::open(folder)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| Error::io(format!("cannot sync {}", folder.display()), e))?;
    }
    #[cfg(not(unix))]
    let _ = target;
    Ok(())
}
