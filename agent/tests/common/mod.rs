//! Helpers of the agent's integration tests: the real `diskferry-agent`
//! binary and its JSON. Images, oracles, proxies and Azurite come from the
//! test kit (`diskferry-testkit`).
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

pub use diskferry_testkit::image::{make_image, noise, poke, poke_text, text};
pub use diskferry_testkit::judge::{dir_state, identical, loop_device, vhd_virtual_size, LoopDevice};
pub use diskferry_testkit::{azurite, MIB};

pub fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_diskferry-agent"))
}

pub fn run(args: &[&str]) -> Output {
    agent().args(args).output().unwrap()
}

/// Run, require success, parse the `--json` output.
pub fn run_json(args: &[&str]) -> serde_json::Value {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad json {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

pub fn sync_json(src: &Path, vhd: &Path, extra: &[&str]) -> serde_json::Value {
    let to = format!("file:{}", vhd.display());
    let mut args = vec!["sync", src.to_str().unwrap(), "--to", &to, "--json"];
    args.extend_from_slice(extra);
    run_json(&args)
}
