//! Exit codes: the contract between the agent and whoever runs it (a shell
//! script, the coordinator). Documented in `docs/exit-codes.md`. The layers'
//! typed errors map to their code here, once (`From<SourceError>`,
//! `From<StoreError>`); argument checks and the sinks' own I/O errors still
//! name theirs where they arise.

use std::fmt;

/// Why the agent stopped. The numbers are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[repr(u8)]
pub enum ExitCode {
    /// Everything asked for was done.
    Ok = 0,
    /// An unexpected failure (a bug, or an error no other code describes).
    Failure = 1,
    /// The command line is wrong (clap's own code for usage errors).
    Usage = 2,
    /// The source cannot be used: missing, unreadable, wrong size.
    Source = 3,
    /// The destination cannot be used: missing folder, write error, in use.
    Destination = 4,
    /// A manifest named on the command line is missing or corrupt.
    Manifest = 5,
    /// `verify` found the destination different from the source.
    Mismatch = 6,
    /// A fan-out sync: some destinations failed, the others are up to date.
    Partial = 7,
}

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: ExitCode,
    pub error: anyhow::Error,
}

impl Failure {
    pub fn new(code: ExitCode, error: anyhow::Error) -> Self {
        Self { code, error }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One line: the error and its causes joined by ": ".
        write!(f, "{:#}", self.error)
    }
}

/// A source that cannot be opened: exit 3.
impl From<crate::source::SourceError> for Failure {
    fn from(e: crate::source::SourceError) -> Self {
        Failure::new(ExitCode::Source, e.into())
    }
}

/// A storage failure: exit 4, in one line that says what to do.
impl From<diskferry_blob::StoreError> for Failure {
    fn from(e: diskferry_blob::StoreError) -> Self {
        use diskferry_blob::ErrorKind;
        let hint = match e.last_kind() {
            ErrorKind::Forbidden => ": access denied (wrong or expired SAS, wrong account key, or missing role)",
            ErrorKind::ContainerNotFound => ": the container does not exist (pass --create-container to create it)",
            ErrorKind::NotFound => ": not found",
            _ => "",
        };
        Failure::new(ExitCode::Destination, anyhow::anyhow!("{e}{hint}"))
    }
}

/// Attach an exit code to any error.
pub trait WithCode<T> {
    fn code(self, code: ExitCode) -> Result<T, Failure>;
}

impl<T, E: Into<anyhow::Error>> WithCode<T> for Result<T, E> {
    fn code(self, code: ExitCode) -> Result<T, Failure> {
        self.map_err(|e| Failure::new(code, e.into()))
    }
}
