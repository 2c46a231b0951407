//! The files killswitch keeps secrets in, kept private to the service's own OS account: the data
//! folder and any folder it creates (0700), the SQLite database with its WAL and shared-memory
//! files, and the key files (0600). Modes are set at creation and, for files and the data folder
//! that exist already with wider ones, tightened with a warning naming what was open (or, when
//! the mode is not the service's to change, only the warning).

use std::path::Path;

use crate::error::{Error, Result};

const PRIVATE_DIR: u32 = 0o700;
const PRIVATE_FILE: u32 = 0o600;

/// Creates `dir` (and any missing parents) 0700.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(PRIVATE_DIR);
    }
    builder.create(dir)
}

/// The data folder: created 0700, or, when it exists with a wider mode, tightened to 0700.
pub fn secure_data_dir(dir: &Path) -> Result<()> {
    create_private_dir(dir).map_err(|e| {
        Error::io(
            format!("cannot create the data folder {}", dir.display()),
            e,
        )
    })?;
    tighten(dir, PRIVATE_DIR, "data folder")
}

/// Creates `file` empty and 0600 unless it exists, so whatever is written into it later (and
/// SQLite's WAL and shared-memory files, which take the database file's mode) starts private.
pub fn precreate_private_file(file: &Path) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(PRIVATE_FILE);
    }
    match options.open(file) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io(format!("cannot create {}", file.display()), e)),
    }
}

/// A file holding secrets (a key, the database): tightened to 0600 if it is wider. A file
/// that does not exist is left alone.
pub fn secure_file(file: &Path, what: &str) -> Result<()> {
    if !file.exists() {
        return Ok(());
    }
    tighten(file, PRIVATE_FILE, what)
}

#[cfg(unix)]
fn tighten(path: &Path, mode: u32, what: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let found = std::fs::metadata(path)
        .map_err(|e| Error::io(format!("cannot read the mode of {}", path.display()), e))?
        .permissions()
        .mode()
        & 0o777;
    if found & !mode == 0 {
        return Ok(());
    }
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
        // Not ours to change (a volume owned by another account): say so, and go on.
        tracing::warn!(
            path = %path.display(),
            found = %format!("{found:04o}"),
            error = %e,
            "the {what} is readable or writable by other accounts, and its mode cannot be changed; restrict it to {mode:04o}"
        );
        return Ok(());
    }
    tracing::warn!(
        path = %path.display(),
        found = %format!("{found:04o}"),
        "the {what} was readable or writable by other accounts; its mode is now {mode:04o}"
    );
    Ok(())
}

#[cfg(not(unix))]
fn tighten(_: &Path, _: u32, _: &str) -> Result<()> {
    Ok(())
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_folders_and_files_are_private_and_wide_ones_are_tightened() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("a/data");
        secure_data_dir(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
        let db = data.join("killswitch.db");
        precreate_private_file(&db).unwrap();
        assert_eq!(mode(&db), 0o600);

        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        secure_data_dir(&data).unwrap();
        secure_file(&db, "database").unwrap();
        assert_eq!((mode(&data), mode(&db)), (0o700, 0o600));
        secure_file(&data.join("absent"), "key").unwrap();
    }
}
