//! A real `diskferry-agent receive` for relay tests (its own process, killed
//! with the test process), a self-signed certificate made with rcgen, and a
//! metrics scrape.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub const TOKEN: &str = "test-token-0123456789abcdef-do-not-print";

/// A token file in `dir`, its owner's alone (the agent refuses one others
/// may read).
pub fn token_file(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("relay.token");
    std::fs::write(&p, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
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
        let mut cmd = Command::new(crate::process::agent_bin());
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
