//! A real Azurite for the tests of one test binary: installed by
//! `scripts/azurite.sh install` (npm, into .cache), started on a free
//! loopback port with its data in memory, killed when the test process
//! exits (PR_SET_PDEATHSIG on a thread that lives as long as the process).
//! Each test uses its own container, so tests run in parallel.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

pub use crate::process::free_port;

pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The endpoint (`http://127.0.0.1:PORT`) of this process's Azurite.
pub fn endpoint() -> &'static str {
    static EP: OnceLock<String> = OnceLock::new();
    EP.get_or_init(|| {
        let st = Command::new("bash").arg(repo().join("scripts/azurite.sh")).arg("install").status().unwrap();
        assert!(st.success(), "scripts/azurite.sh install failed");
        let port = free_port();
        let (tx, rx) = mpsc::channel();
        // The child dies with the thread that started it (PR_SET_PDEATHSIG):
        // this one lives as long as the process.
        std::thread::spawn(move || {
            let mut child = spawn_node(port, None);
            tx.send(()).unwrap();
            let _ = child.wait();
        });
        rx.recv().unwrap();
        wait_up(port);
        format!("http://127.0.0.1:{port}")
    })
}

/// Start Azurite's blob service on `port`: data in memory, or on disk in
/// `location`. Killed if the thread that starts it ends.
fn spawn_node(port: u16, location: Option<&std::path::Path>) -> std::process::Child {
    let main = repo().join(".cache/azurite/node_modules/azurite/dist/src/blob/main.js");
    let mut cmd = Command::new("node");
    cmd.arg(&main).args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()]);
    match location {
        Some(dir) => cmd.arg("--location").arg(dir),
        None => cmd.arg("--inMemoryPersistence"),
    };
    cmd.args(["--loose", "--skipApiVersionCheck", "--disableTelemetry", "--silent"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    crate::process::die_with_parent(&mut cmd);
    cmd.spawn().expect("node not found")
}

fn wait_up(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "azurite did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A fresh container name for one test.
pub fn container(test: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{}-{}-{n}", test.replace('_', "-"), std::process::id()).chars().take(63).collect()
}

/// `pageblob:` URL of `blob` in `container` at `endpoint`.
pub fn url(endpoint: &str, container: &str, blob: &str) -> String {
    format!("pageblob:{endpoint}/{ACCOUNT}/{container}/{blob}")
}

/// The connection string of the well-known account.
pub fn connection_string() -> String {
    format!("DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};")
}

/// An Azurite of one test's own, keeping its data on disk in `dir`, that can
/// be stopped and started again on the same port (storage going away and
/// coming back mid-sync).
pub struct OwnAzurite {
    pub port: u16,
    dir: PathBuf,
    child: Option<std::process::Child>,
}

impl OwnAzurite {
    pub fn start(dir: &std::path::Path) -> Self {
        let _ = endpoint(); // installs Azurite once
        let mut a = Self { port: free_port(), dir: dir.to_owned(), child: None };
        a.up();
        a
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn up(&mut self) {
        self.child = Some(spawn_node(self.port, Some(&self.dir)));
        wait_up(self.port);
    }

    /// Stop it (SIGTERM, so it saves its metadata: Azurite's on-disk store
    /// loses recent changes on SIGKILL, which Azure never does), keeping its data.
    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnAzurite {
    fn drop(&mut self) {
        self.down();
    }
}
