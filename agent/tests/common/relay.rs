//! A real `diskferry-agent receive` for relay tests (its own process, killed
//! with the test process), a self-signed certificate made with rcgen, a TCP
//! proxy that cuts connections, and a metrics scrape.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const TOKEN: &str = "test-token-0123456789abcdef-do-not-print";

/// A token file in `dir`.
pub fn token_file(dir: &Path) -> PathBuf {
    let p = dir.join("relay.token");
    std::fs::write(&p, format!("{TOKEN}\n")).unwrap();
    p
}

/// A self-signed certificate for `localhost` and 127.0.0.1: (cert, key) files.
pub fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, ck.cert.pem()).unwrap();
    std::fs::write(&k, ck.key_pair.serialize_pem()).unwrap();
    (c, k)
}

/// A running receiver.
pub struct Receiver {
    pub child: Child,
    /// `https://127.0.0.1:PORT` or `http://...`.
    pub base: String,
    pub port: u16,
    pub fingerprint: Option<String>,
    pub metrics: String,
    pub stderr: PathBuf,
}

impl Receiver {
    /// Start `receive` on 127.0.0.1:`port` (0 = any) with `root`; TLS when
    /// `cert` is given; `env` added to its environment.
    pub fn start(
        dir: &Path,
        root: &str,
        port: u16,
        cert: Option<&(PathBuf, PathBuf)>,
        env: &[(&str, String)],
        extra: &[&str],
    ) -> Self {
        let token = token_file(dir);
        let stderr = dir.join(format!("receiver-{}.err", std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_diskferry-agent"));
        cmd.args(["receive", "--listen", &format!("127.0.0.1:{port}"), "--root", root])
            .arg("--token-file")
            .arg(&token)
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap());
        if let Some((c, k)) = cert {
            cmd.arg("--tls-cert").arg(c).arg("--tls-key").arg(k);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        // SAFETY: prctl in the child before exec only sets a flag of the child.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(
            line.starts_with("listening on "),
            "receiver did not start: {line:?} {}",
            std::fs::read_to_string(&stderr).unwrap()
        );
        let base = line.split_whitespace().nth(2).unwrap().to_owned();
        let port = base.rsplit(':').next().unwrap().parse().unwrap();
        let fingerprint = line.split("certificate sha256 ").nth(1).map(|s| s.trim().to_owned());
        let err = std::fs::read_to_string(&stderr).unwrap();
        let metrics = err
            .lines()
            .find_map(|l| l.strip_prefix("metrics at http://"))
            .unwrap()
            .trim_end_matches("/metrics")
            .to_owned();
        Self { child, base, port, fingerprint, metrics, stderr }
    }

    /// `relay:` URL of `disk` through this receiver (or through a proxy port).
    pub fn url(&self, disk: &str) -> String {
        format!("relay:{}/{disk}", self.base)
    }

    pub fn url_via(&self, port: u16, disk: &str) -> String {
        let scheme = self.base.split("://").next().unwrap();
        format!("relay:{scheme}://127.0.0.1:{port}/{disk}")
    }

    /// One metric's value (summed over label sets that contain `labels`).
    pub fn metric(&self, name: &str, labels: &str) -> u64 {
        let text = http_get(&self.metrics, "/metrics");
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    pub fn metrics_text(&self) -> String {
        http_get(&self.metrics, "/metrics")
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()
}

/// A TCP proxy in front of `target` whose first `cuts` connections are cut:
/// odd ones after a pseudo-random number of request bytes (a request torn
/// mid-body), even ones as soon as the answer starts (the request was
/// carried out, its answer lost). Later connections pass untouched.
pub struct CuttingProxy {
    pub port: u16,
    pub cut: Arc<AtomicU64>,
    pub up: Arc<AtomicU64>,
}

impl CuttingProxy {
    pub fn start(target: u16, cuts: u64, seed: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, up) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (c, u) = (cut.clone(), up.clone());
        std::thread::spawn(move || {
            let mut x = seed | 1;
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else { continue };
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let n = c.load(Ordering::Relaxed);
                let (up_limit, drop_answer) = if n >= cuts {
                    (u64::MAX, false)
                } else {
                    c.fetch_add(1, Ordering::Relaxed);
                    if n % 2 == 0 {
                        (64 * 1024 + x % (40 << 20), false)
                    } else {
                        (u64::MAX, true)
                    }
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let u = u.clone();
                std::thread::spawn(move || pipe(client, server, up_limit, Some(u)));
                std::thread::spawn(move || pipe(s2, c2, if drop_answer { 0 } else { u64::MAX }, None));
            }
        });
        Self { port, cut, up }
    }

    pub fn cuts(&self) -> u64 {
        self.cut.load(Ordering::Relaxed)
    }
}

/// Copy `from` to `to` until EOF or `limit` bytes, then close both.
fn pipe(mut from: TcpStream, mut to: TcpStream, limit: u64, count: Option<Arc<AtomicU64>>) {
    let mut buf = vec![0u8; 64 << 10];
    let mut sent = 0u64;
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let n = (n as u64).min(limit - sent) as usize;
                if n == 0 {
                    break;
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                if let Some(c) = &count {
                    c.fetch_add(n as u64, Ordering::Relaxed);
                }
                sent += n as u64;
                if sent >= limit {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}

/// Wait until `f` holds (at most `secs`).
pub fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
