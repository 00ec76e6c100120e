//! Helpers for the coordinator's tests: a state folder and config per
//! test, sample VMs and the coordinator binary; images, oracles, Azurite
//! and the ARM simulator come from the test kit (`diskferry-testkit`).
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

pub use diskferry_testkit::image::{make_disk, noise, poke};
pub use diskferry_testkit::judge::{can_loop, identical, walk};
pub use diskferry_testkit::process::{agent_bin, kill, wait_for};
pub use diskferry_testkit::{armsim, azurite};

pub mod azure;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// A disk of a sample VM: name, size, data extents (offset, length).
pub type DiskSpec<'a> = (&'a str, u64, &'a [(u64, u64)]);

/// A VM folder `dir/NAME` with the given disks.
pub fn make_vm(dir: &Path, name: &str, disks: &[DiskSpec<'_>]) -> PathBuf {
    let vm = dir.join(name);
    std::fs::create_dir_all(&vm).unwrap();
    let mut toml = format!("name = \"{name}\"\nos_type = \"linux\"\n");
    for (i, (disk, size, extents)) in disks.iter().enumerate() {
        make_disk(&vm.join(format!("{disk}.img")), *size, extents, 100 * i as u64 + 7);
        toml.push_str(&format!("[[disks]]\nname = \"{disk}\"\npath = \"{disk}.img\"\n"));
    }
    std::fs::write(vm.join("vm.toml"), toml).unwrap();
    vm
}

/// Read `child`'s piped stderr until a line `found` accepts (the child
/// exiting first fails the test, naming `what`); return that line, and
/// keep draining the rest so the child never blocks on a full pipe.
pub fn stderr_until(child: &mut Child, what: &str, found: impl Fn(&str) -> bool) -> String {
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "diskferry exited before {what}");
        if found(&line) {
            break;
        }
    }
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    line
}

/// One test's coordinator: its own state folder and config.
pub struct Coord {
    pub dir: tempfile::TempDir,
    pub state: PathBuf,
    pub config: PathBuf,
    pub endpoint: Option<String>,
    /// More environment for every command (an ARM token, say).
    pub env: Vec<(String, String)>,
    /// The PostgreSQL database of this test when the suite runs on that
    /// backend (`DISKFERRY_TEST_BACKEND=postgres`); SQLite in `state` if not.
    pub db_url: Option<String>,
}

/// Does this run of the suite keep coordinator state in PostgreSQL?
pub fn on_postgres() -> bool {
    std::env::var("DISKFERRY_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

/// On PostgreSQL, nothing may have fallen back to a SQLite file.
impl Drop for Coord {
    fn drop(&mut self) {
        if self.db_url.is_some() && !std::thread::panicking() {
            assert!(
                !self.state.join("state.db").exists(),
                "state went to SQLite although the suite runs on PostgreSQL"
            );
        }
    }
}

impl Coord {
    pub fn new(with_azurite: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let config = dir.path().join("diskferry.toml");
        std::fs::write(
            &config,
            "[storage]\ncreate_container = true\nretry_for_secs = 3\nconcurrency = 8\n[run]\ndeadline_secs = 300\nstatus_interval_ms = 100\n",
        )
        .unwrap();
        let endpoint = with_azurite.then(|| azurite::endpoint().to_owned());
        let db_url = on_postgres().then(|| diskferry_testkit::postgres::database("coord"));
        Self { dir, state, config, endpoint, env: Vec::new(), db_url }
    }

    /// A coordinator whose state is in PostgreSQL whatever the suite runs on
    /// (several daemons on one database).
    pub fn shared(with_azurite: bool) -> Self {
        let mut c = Self::new(with_azurite);
        if c.db_url.is_none() {
            c.db_url = Some(diskferry_testkit::postgres::database("shared"));
        }
        c
    }

    /// Run SQL statements on this coordinator's state database, whichever it is.
    pub fn sql(&self, sql: &str) {
        match &self.db_url {
            Some(url) => {
                diskferry_testkit::postgres::query(url, sql);
            }
            None => rusqlite::Connection::open(self.state.join("state.db")).unwrap().execute_batch(sql).unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A `pageblob:` container destination for this test.
    pub fn container(&self, test: &str) -> String {
        let c = azurite::container(test);
        format!("pageblob:{}/{}/{c}", self.endpoint.as_deref().unwrap(), azurite::ACCOUNT)
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_diskferry"));
        c.env("DISKFERRY_STATE_DIR", &self.state)
            .env("DISKFERRY_CONFIG", &self.config)
            .env("DISKFERRY_AGENT", agent_bin())
            .env("AZURE_STORAGE_CONNECTION_STRING", azurite::connection_string())
            .env_remove("DISKFERRY_FAILPOINTS")
            .env_remove("DISKFERRY_STATE_URL")
            .envs(self.db_url.iter().map(|u| ("DISKFERRY_STATE_URL", u)))
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Run, require success, parse `--json` output.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "diskferry {args:?} failed ({:?}): {}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("bad json {e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// Start `diskferry ARGS` with a failpoint that pauses it; return once it is paused.
    pub fn start_paused(&self, args: &[&str], point: &str) -> Child {
        let mut child = self
            .cmd()
            .args(args)
            .env("DISKFERRY_FAILPOINTS", format!("{point}=pause"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let want = format!("failpoint {point}: paused");
        stderr_until(&mut child, &format!("failpoint {point}"), |l| l.contains(&want));
        child
    }

    /// Files under the state folder's `runs/` and `snapshots/`.
    pub fn leftovers(&self) -> (Vec<PathBuf>, Vec<PathBuf>) {
        (walk(&self.state.join("runs")), walk(&self.state.join("snapshots")))
    }

    /// Agent processes working for this state folder.
    pub fn agents(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
            let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else { continue };
            if String::from_utf8_lossy(&cmd).contains(self.state.join("runs").to_str().unwrap()) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Loop devices backed by files of this state folder.
    pub fn loops(&self) -> Vec<String> {
        let out =
            Command::new("losetup").args(["--list", "--noheadings", "--raw", "--output", "NAME,BACK-FILE"]).output();
        let Ok(out) = out else { return Vec::new() };
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(self.state.to_str().unwrap()))
            .map(str::to_owned)
            .collect()
    }
}
