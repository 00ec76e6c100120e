//! Failpoints for crash tests: `DISKFERRY_FAILPOINTS="after-snapshot=pause"`
//! stops the coordinator at a named point so a test can SIGKILL it there;
//! `NAME=sleep:MS` delays it (to make runs overlap). Unset, they cost one
//! environment lookup per point and do nothing.

use std::time::Duration;

const VAR: &str = "DISKFERRY_FAILPOINTS";

/// Pass the point called `name`.
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
