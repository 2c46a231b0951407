//! The one error type of the crate.
//!
//! Variants describe what went wrong in terms a caller can act on; the HTTP layer maps them to
//! problem+json responses and the CLI prints them as one line. Messages never carry secrets.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// One or more configuration problems, each a complete sentence.
    #[error("{}", .0.join("\n"))]
    Config(Vec<String>),

    /// Input that does not have the expected shape (a slug, an id, a flag value).
    #[error("{0}")]
    InvalidInput(String),

    #[error("{0} not found")]
    NotFound(String),

    #[error("{0}")]
    Conflict(String),

    /// The database could not be reached or answered with an error.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),

    /// The database cannot be reached (connection refused, file cannot be opened).
    #[error("database unavailable: {0}")]
    DatabaseUnavailable(String),

    #[error("database migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),

    /// The schema is older than this binary; nothing is written until it is migrated.
    #[error(
        "the database schema is not up to date ({pending} migration(s) pending): run `killswitch migrate`"
    )]
    SchemaBehind { pending: usize },

    /// The audit log cannot be written, so the operation that needed it was refused.
    #[error("audit log unavailable: {0}")]
    AuditUnavailable(String),

    #[error("audit signing key {}: {reason}", path.display())]
    SigningKey { path: PathBuf, reason: String },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// A service killswitch depends on (Entra, Graph) failed or could not be reached.
    #[error("{0}")]
    Upstream(String),

    /// A detection was decided (approved, dismissed, or disabled automatically) before this
    /// decision; nothing was done.
    #[error("the detection is {} already", .0.as_str())]
    DetectionDecided(crate::domain::detection::DetectionState),

    /// Another process recorded this action's outcome first; nothing was written.
    #[error("the outcome was already recorded")]
    Superseded,

    /// A bug or an impossible state; the detail is logged, never shown to API clients.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<crate::domain::InvalidValue> for Error {
    fn from(e: crate::domain::InvalidValue) -> Self {
        match e {
            crate::domain::InvalidValue::Input(message) => Error::InvalidInput(message),
            crate::domain::InvalidValue::Stored(message) => Error::Internal(message),
        }
    }
}
