//! Storage failures, typed: what happened ([`ErrorKind`], derived from the
//! HTTP status and Azure's error code in one place, [`StoreError::kind`]),
//! which operation on which blob (never with a SAS), and whether trying
//! again may help.

use std::time::Duration;

/// What kind of failure a storage request met: what callers match on,
/// instead of status numbers and error-code strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// 404 for a blob (or a snapshot of one).
    NotFound,
    /// 404 `ContainerNotFound`: the container itself is missing.
    ContainerNotFound,
    /// 401/403: wrong or expired SAS, wrong key, missing role.
    Forbidden,
    /// 409: the blob exists, is of another type, a lease or a pending copy is in the way.
    Conflict,
    /// 412: a condition (If-Match, sequence number) did not hold.
    PreconditionFailed,
    /// 409/412 with a `Lease*` code: another writer holds the blob's lease,
    /// or the lease this writer named is no longer its.
    Leased,
    /// 429 or 503: the service asks us to slow down.
    Throttled,
    /// 408, 500, 502, 504: the service failed this once.
    Server,
    /// Any other HTTP status: a request the service will refuse again.
    Refused,
    /// No answer: connection refused or reset, timeout, a malformed reply.
    Transport,
    /// The request could not be made, or its answer makes no sense: sending
    /// it again changes nothing (a bad URL, a reply without what it must name).
    Invalid,
    /// Retries ran out; [`StoreError::Exhausted`] holds the last failure.
    Exhausted,
}

impl ErrorKind {
    /// Whether the same request may succeed if sent again.
    pub fn retryable(self) -> bool {
        matches!(self, ErrorKind::Throttled | ErrorKind::Server | ErrorKind::Transport)
    }
}

/// A storage failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {what}: HTTP {status} {code}")]
    Http { op: &'static str, what: String, status: u16, code: String, retry_after: Option<Duration> },
    #[error("{op} {what}: {message}")]
    Transport { op: &'static str, what: String, message: String },
    #[error("{op} {what}: {message}")]
    Invalid { op: &'static str, what: String, message: String },
    #[error("{op} {what}: gave up after {attempts} attempts in {secs:.0} s: {last}")]
    Exhausted { op: &'static str, what: String, attempts: u32, secs: f64, last: Box<StoreError> },
}

impl StoreError {
    /// An HTTP failure as a service would answer it.
    pub fn http(op: &'static str, what: &str, status: u16, code: &str) -> Self {
        StoreError::Http { op, what: what.to_owned(), status, code: code.to_owned(), retry_after: None }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Http { status: 404, code, .. } if code == "ContainerNotFound" => ErrorKind::ContainerNotFound,
            StoreError::Http { status: 409 | 412, code, .. } if code.starts_with("Lease") => ErrorKind::Leased,
            StoreError::Http { status, .. } => match status {
                404 => ErrorKind::NotFound,
                401 | 403 => ErrorKind::Forbidden,
                409 => ErrorKind::Conflict,
                412 => ErrorKind::PreconditionFailed,
                429 | 503 => ErrorKind::Throttled,
                408 | 500 | 502 | 504 => ErrorKind::Server,
                _ => ErrorKind::Refused,
            },
            StoreError::Transport { .. } => ErrorKind::Transport,
            StoreError::Invalid { .. } => ErrorKind::Invalid,
            StoreError::Exhausted { .. } => ErrorKind::Exhausted,
        }
    }

    /// The kind of the failure behind retries, if they ran out.
    pub fn last_kind(&self) -> ErrorKind {
        match self {
            StoreError::Exhausted { last, .. } => last.last_kind(),
            e => e.kind(),
        }
    }

    pub fn retryable(&self) -> bool {
        self.kind().retryable()
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            StoreError::Http { status, .. } => Some(*status),
            StoreError::Exhausted { last, .. } => last.status(),
            StoreError::Transport { .. } | StoreError::Invalid { .. } => None,
        }
    }

    /// How long the service asked us to wait.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            StoreError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_status_and_code() {
        let k = |s, c| StoreError::http("get", "b", s, c).kind();
        assert_eq!(k(404, "BlobNotFound"), ErrorKind::NotFound);
        assert_eq!(k(404, "ContainerNotFound"), ErrorKind::ContainerNotFound);
        assert_eq!(k(403, "AuthenticationFailed"), ErrorKind::Forbidden);
        assert_eq!(k(409, "BlobAlreadyExists"), ErrorKind::Conflict);
        assert_eq!(k(412, "ConditionNotMet"), ErrorKind::PreconditionFailed);
        assert_eq!(k(409, "LeaseAlreadyPresent"), ErrorKind::Leased);
        assert_eq!(k(412, "LeaseIdMismatchWithBlobOperation"), ErrorKind::Leased);
        assert_eq!(k(412, "LeaseLost"), ErrorKind::Leased);
        assert_eq!(k(503, "ServerBusy"), ErrorKind::Throttled);
        assert_eq!(k(500, "InternalError"), ErrorKind::Server);
        assert_eq!(k(400, "InvalidHeaderValue"), ErrorKind::Refused);
        assert!(k(503, "ServerBusy").retryable() && k(408, "").retryable());
        assert!(!k(409, "").retryable() && !k(412, "").retryable() && !k(404, "").retryable());
        let gone = StoreError::Exhausted {
            op: "put",
            what: "b".into(),
            attempts: 3,
            secs: 1.0,
            last: Box::new(StoreError::http("put", "b", 503, "ServerBusy")),
        };
        assert_eq!(
            (gone.kind(), gone.last_kind(), gone.status()),
            (ErrorKind::Exhausted, ErrorKind::Throttled, Some(503))
        );
        assert!(!gone.retryable());
    }
}
