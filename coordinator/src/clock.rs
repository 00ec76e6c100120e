//! Wall-clock time as the state store keeps it: unix seconds.

/// Now, in unix seconds.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}
