//! The built binaries, waiting for conditions, free ports.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

/// A binary of the workspace, built beside the running test binary
/// (`target/<profile>/deps/TEST` -> `target/<profile>/NAME`); `cargo test
/// --workspace` builds them all.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let p = dir.join(name);
    assert!(p.is_file(), "{} is missing: build the workspace (cargo test --workspace)", p.display());
    p
}

/// `diskferry-agent`.
pub fn agent_bin() -> PathBuf {
    bin("diskferry-agent")
}

/// Wait until `f` holds; `false` after `secs`.
pub fn poll(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Wait until `f` holds, or panic after `secs` naming `what`.
pub fn wait_for(secs: u64, what: &str, f: impl FnMut() -> bool) {
    assert!(poll(secs, f), "timed out waiting for {what}");
}

/// Kill a child and reap it.
pub fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Have `cmd`'s child killed (SIGKILL) when the thread that spawns it
/// ends (PR_SET_PDEATHSIG): a server a test starts never outlives it.
pub fn die_with_parent(cmd: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl in the child before exec only sets a flag of the child
    // itself (after a uid change, which would clear it); no memory of the
    // parent is touched.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    }
}
