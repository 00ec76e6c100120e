//! Failpoints for crash tests: `DISKFERRY_FAILPOINTS="after-snapshot=pause"`
//! stops the coordinator at a named point so a test can SIGKILL it there;
//! `NAME=sleep:MS` delays it (to make runs overlap). They exist only in a
//! build with the `failpoints` feature (the tests' build); elsewhere
//! [`hit`] is empty and the variable is never read.

#[cfg(feature = "failpoints")]
use std::time::Duration;

#[cfg(feature = "failpoints")]
const VAR: &str = "DISKFERRY_FAILPOINTS";

/// Pass the point called `name` (a build without failpoints).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}

/// Pass the point called `name`.
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    let Ok(spec) = std::env::var(VAR) else { return };
    for item in spec.split(';') {
        let Some((point, what)) = item.split_once('=') else { continue };
        if point.trim() != name {
            continue;
        }
        match what.trim() {
            "pause" => {
                eprintln!("failpoint {name}: paused (pid {})", std::process::id());
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
            w => {
                if let Some(ms) = w.strip_prefix("sleep:").and_then(|m| m.parse().ok()) {
                    std::thread::sleep(Duration::from_millis(ms));
                }
            }
        }
    }
}
