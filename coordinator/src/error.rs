//! The coordinator's exit codes (`docs/exit-codes.md`) and the errors that
//! decide them. A failure's code comes from its error's type, in one place
//! ([`Failure`]'s `From<anyhow::Error>`): whatever context was added on the
//! way up, a [`CoordError`] in the chain names the code; anything else —
//! a database, cloud or I/O failure — is exit 1. Only argument checks mark
//! their errors as bad input themselves ([`usage`]).

use std::fmt;

/// Exit codes of `diskferry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Failure = 1,
    Usage = 2,
    Busy = 3,
}

/// Errors whose kind the user must hear in the exit code.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    #[error("no replica named {0:?} (see `diskferry replica list`)")]
    UnknownReplica(String),
    #[error("replica {0:?} already exists")]
    ReplicaExists(String),
    /// A run of the replica is in progress (`what` says how it was found).
    #[error("replica {replica} is {what} (run {run})")]
    Busy { replica: String, what: String, run: String },
    /// The replica was failed over: its VM runs from a recovery point now.
    #[error(
        "replica {0} was failed over (its VM runs from a recovery point): it syncs no more; replicate the \
         failed-over VM with a new replica (failback)"
    )]
    FailedOver(String),
    /// The configuration file or an argument is wrong.
    #[error("{0:#}")]
    BadInput(anyhow::Error),
}

impl CoordError {
    pub fn code(&self) -> Code {
        match self {
            CoordError::UnknownReplica(_)
            | CoordError::ReplicaExists(_)
            | CoordError::BadInput(_)
            | CoordError::FailedOver(_) => Code::Usage,
            CoordError::Busy { .. } => Code::Busy,
        }
    }
}

/// An error and its exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: Code,
    pub error: anyhow::Error,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        let code = error.chain().find_map(|e| e.downcast_ref::<CoordError>()).map_or(Code::Failure, CoordError::code);
        Self { code, error }
    }
}

impl From<CoordError> for Failure {
    fn from(e: CoordError) -> Self {
        Self { code: e.code(), error: e.into() }
    }
}

/// Mark an error as bad input (exit 2): for argument and configuration
/// checks, whose every failure is the user's to fix.
pub fn usage<T>(r: anyhow::Result<T>) -> Result<T, Failure> {
    r.map_err(|error| Failure { code: Code::Usage, error })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn the_code_comes_from_the_type_under_any_context() {
        let e: anyhow::Result<()> = Err(CoordError::UnknownReplica("web".into()).into());
        let f = Failure::from(e.context("replica show").unwrap_err());
        assert_eq!(f.code, Code::Usage);
        assert!(f.to_string().starts_with("replica show: no replica named \"web\""), "{f}");
        let busy = CoordError::Busy { replica: "web".into(), what: "running".into(), run: "r1".into() };
        assert_eq!(Failure::from(busy).code, Code::Busy);
        let io: anyhow::Error = std::io::Error::other("disk I/O error").into();
        assert_eq!(Failure::from(io.context("reading replica web")).code, Code::Failure);
    }
}
