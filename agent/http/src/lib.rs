//! The one HTTP endpoint diskferry's binaries serve: `GET /metrics` in the
//! Prometheus text format, for the agent (`--metrics-addr`), the relay
//! receiver and the coordinator's daemon. It is small on purpose and
//! defensive, because a scraper's port is reachable by whoever shares the
//! network:
//!
//! - a request line of at most [`Limits::line`] bytes and headers of at most
//!   [`Limits::headers`] bytes (else `431` and close);
//! - one deadline for the whole request and a write timeout (a client that
//!   sends nothing, or one byte at a time, is dropped: it cannot hold a thread);
//! - at most [`Limits::connections`] connections at once (beyond: closed at
//!   once), one thread each;
//! - a failed `accept` (out of file descriptors) pauses the loop instead of
//!   spinning;
//! - one request per connection (`Connection: close`).
//!
//! ```no_run
//! use std::sync::Arc;
//! let addr = diskferry_http::serve(
//!     "127.0.0.1:0".parse().unwrap(),
//!     "metrics",
//!     Arc::new(|| Ok::<_, String>("up 1\n".to_owned())),
//!     diskferry_http::Limits::default(),
//! )
//! .unwrap();
//! println!("scrape http://{addr}/metrics");
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What renders the exposition; an `Err` is answered 500 with its text.
pub trait Render: Send + Sync {
    fn render(&self) -> Result<String, String>;
}

impl<F: Fn() -> Result<String, String> + Send + Sync> Render for F {
    fn render(&self) -> Result<String, String> {
        self()
    }
}

/// How much a client may ask of the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of the request line.
    pub line: usize,
    /// Bytes of all header lines together.
    pub headers: usize,
    /// Connections served at once.
    pub connections: usize,
    /// For the whole request to arrive, and for each write of the answer.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        // A scrape's request is a few hundred bytes; Prometheus scrapes one
        // target with one connection at a time and times out at 10 s.
        Self { line: 4096, headers: 16 << 10, connections: 16, timeout: Duration::from_secs(5) }
    }
}

/// Serve `GET /metrics` on `addr` from a thread named `name`. Returns the
/// bound address (port 0 picks a free one).
pub fn serve(addr: SocketAddr, name: &str, render: Arc<dyn Render>, limits: Limits) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let active = Arc::new(AtomicUsize::new(0));
    let conn_name = format!("{name}-conn");
    std::thread::Builder::new().name(name.to_owned()).spawn(move || loop {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(_) => {
                // Out of descriptors or a transient error: pause, don't spin.
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let Some(slot) = Slot::take(&active, limits.connections) else {
            drop(stream);
            continue;
        };
        let render = render.clone();
        let spawned = std::thread::Builder::new().name(conn_name.clone()).spawn(move || {
            let _slot = slot;
            let _ = handle(&stream, render.as_ref(), limits);
        });
        if spawned.is_err() {
            // The closure went with the failed spawn, and its slot with it.
            std::thread::sleep(Duration::from_millis(100));
        }
    })?;
    Ok(bound)
}

/// One of the connections served at once, given back when dropped
/// (whether its thread ends, panics or never starts).
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(active: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        if active.fetch_add(1, Ordering::AcqRel) >= max {
            active.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(active.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Reads that all end by one deadline, however the client paces its bytes.
struct Deadline<'a> {
    stream: &'a TcpStream,
    until: Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut s = self.stream;
        s.read(buf)
    }
}

/// Read one line of at most `max` raw bytes: `(line, bytes)`, or `None` if
/// longer or cut.
fn read_line(r: &mut impl BufRead, max: usize) -> std::io::Result<Option<(String, usize)>> {
    let mut line = Vec::new();
    let n = r.take(max as u64 + 1).read_until(b'\n', &mut line)?;
    if n == 0 || n > max || !line.ends_with(b"\n") {
        return Ok(None);
    }
    Ok(Some((String::from_utf8_lossy(&line).into_owned(), n)))
}

fn handle(stream: &TcpStream, render: &dyn Render, limits: Limits) -> std::io::Result<()> {
    stream.set_write_timeout(Some(limits.timeout))?;
    let mut reader = BufReader::new(Deadline { stream, until: Instant::now() + limits.timeout });
    let Some((line, _)) = read_line(&mut reader, limits.line)? else {
        return refuse(stream, "request line too long\n");
    };
    let mut left = limits.headers;
    loop {
        let Some((h, n)) = read_line(&mut reader, left)? else {
            return refuse(stream, "headers too large\n");
        };
        left -= n;
        if h == "\r\n" || h == "\n" {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    match (method, path) {
        ("GET", "/metrics") => match render.render() {
            Ok(body) => respond(stream, "200 OK", &body),
            Err(e) => respond(stream, "500 Internal Server Error", &format!("{e}\n")),
        },
        ("GET", _) => respond(stream, "404 Not Found", "only /metrics here\n"),
        _ => respond(stream, "405 Method Not Allowed", "GET /metrics\n"),
    }
}

/// Refuse a request that is too large: answer 431, then read and drop what
/// the client is still sending (at most 1 MiB, for at most a second) before
/// closing. A socket closed with unread bytes sends a reset, which can
/// destroy the answer before the client has read it.
fn refuse(stream: &TcpStream, body: &str) -> std::io::Result<()> {
    respond(stream, "431 Request Header Fields Too Large", body)?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut drain = Deadline { stream, until: Instant::now() + Duration::from_secs(1) };
    let mut dropped = [0u8; 8192];
    let mut left: usize = 1 << 20;
    while left > 0 {
        match drain.read(&mut dropped) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
    Ok(())
}

fn respond(mut stream: &TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Instant;

    fn start(limits: Limits) -> SocketAddr {
        serve("127.0.0.1:0".parse().unwrap(), "test-metrics", Arc::new(|| Ok::<_, String>("up 1\n".into())), limits)
            .unwrap()
    }

    fn ask(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn serves_metrics_and_refuses_the_rest() {
        let a = start(Limits::default());
        let ok = ask(a, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK") && ok.ends_with("up 1\n"), "{ok}");
        assert!(ask(a, b"GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(ask(a, b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(10_000));
        assert!(ask(a, long.as_bytes()).starts_with("HTTP/1.1 431"));
        let many = format!("GET /metrics HTTP/1.1\r\n{}\r\n", "X-Pad: 0123456789abcdef\r\n".repeat(2000));
        assert!(ask(a, many.as_bytes()).starts_with("HTTP/1.1 431"));
        // Bytes that are not UTF-8 count as what they are, not as what they print as.
        let mut odd = b"GET /metrics HTTP/1.1\r\n".to_vec();
        for _ in 0..400 {
            odd.extend_from_slice(b"X: ");
            odd.extend_from_slice(&[0x80; 60]);
            odd.extend_from_slice(b"\r\n");
        }
        odd.extend_from_slice(b"\r\n");
        assert!(ask(a, &odd).starts_with("HTTP/1.1 431"));
    }

    #[test]
    fn a_client_that_drips_bytes_is_cut_at_the_deadline() {
        let a = start(Limits { timeout: Duration::from_millis(500), ..Limits::default() });
        let mut s = TcpStream::connect(a).unwrap();
        let t = Instant::now();
        // One byte every 100 ms: no single read waits long, the request never ends.
        for b in b"GET /metrics HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if s.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            let mut probe = [0u8; 1];
            s.set_nonblocking(true).unwrap();
            let gone = matches!(s.read(&mut probe), Ok(0));
            s.set_nonblocking(false).unwrap();
            if gone {
                break;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(3), "the connection lived {:?}", t.elapsed());
    }

    #[test]
    fn idle_clients_are_dropped_and_cannot_crowd_out_a_scrape() {
        let limits = Limits { connections: 4, timeout: Duration::from_millis(300), ..Limits::default() };
        let a = start(limits);
        // Eight clients that say nothing: four are served (and time out),
        // four are closed at once.
        let idle: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(a).unwrap()).collect();
        let t = Instant::now();
        let mut served = false;
        while t.elapsed() < Duration::from_secs(5) {
            if ask(a, b"GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200") {
                served = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(served, "a scrape never got through the idle connections");
        assert!(t.elapsed() < Duration::from_secs(3), "took {:?}", t.elapsed());
        drop(idle);
    }
}
