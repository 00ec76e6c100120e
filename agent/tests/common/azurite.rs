//! A real Azurite for the tests of one test binary: installed by
//! `scripts/azurite.sh install` (npm, into .cache), started on a free
//! loopback port with its data in memory, killed when the test process
//! exits (PR_SET_PDEATHSIG on a thread that lives as long as the process).
//! Each test uses its own container, so tests run in parallel.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
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
    // SAFETY: prctl in the child before exec only sets a flag of the child
    // itself; no memory of the parent is touched.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn().expect("node not found")
}

fn wait_up(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "azurite did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
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

/// A TCP proxy on loopback in front of `target` that counts the bytes sent
/// from client to server (requests: headers and bodies) and the connections.
pub struct CountingProxy {
    pub port: u16,
    pub up: Arc<AtomicU64>,
    pub connections: Arc<AtomicU64>,
}

impl CountingProxy {
    pub fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let (counter, conns) = (up.clone(), connections.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                conns.fetch_add(1, Ordering::Relaxed);
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else { continue };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let n = counter.clone();
                std::thread::spawn(move || pipe(client, server, Some(n)));
                std::thread::spawn(move || pipe(s2, c2, None));
            }
        });
        Self { port, up, connections }
    }

    pub fn bytes_up(&self) -> u64 {
        self.up.load(Ordering::Relaxed)
    }

    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, count: Option<Arc<AtomicU64>>) {
    let mut buf = vec![0u8; 256 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Some(c) = &count {
                    c.fetch_add(n as u64, Ordering::Relaxed);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}

/// A TCP proxy in front of `target` whose first `fail_first` connections get
/// `503 Server Busy` with `Retry-After: 1` to their first request, then are
/// closed; later connections are forwarded untouched.
pub struct BusyProxy {
    pub port: u16,
    pub refused: Arc<AtomicU64>,
}

impl BusyProxy {
    pub fn start(target: u16, fail_first: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let refused = Arc::new(AtomicU64::new(0));
        let r = refused.clone();
        std::thread::spawn(move || {
            for mut client in listener.incoming().flatten() {
                if r.load(Ordering::Relaxed) < fail_first {
                    r.fetch_add(1, Ordering::Relaxed);
                    // Read the request head, answer busy, close.
                    let mut head = Vec::new();
                    let mut b = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && client.read(&mut b).is_ok_and(|n| n == 1) {
                        head.push(b[0]);
                    }
                    let _ = client.write_all(
                        b"HTTP/1.1 503 Server Busy\r\nRetry-After: 1\r\nx-ms-error-code: ServerBusy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else { continue };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pipe(client, server, None));
                std::thread::spawn(move || pipe(s2, c2, None));
            }
        });
        Self { port, refused }
    }
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
