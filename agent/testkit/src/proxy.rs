//! One configurable proxy on loopback in front of a server (Azurite, a
//! relay receiver), for the tests that need what only the wire shows. Every
//! proxy counts connections and the bytes clients send; on top, per
//! [`Plan`]:
//!
//! - **refuse** the first N connections: `503 Server Busy` with
//!   `Retry-After: 1` to their first request, then close;
//! - **cut** the first N connections (raw TCP, so TLS passes): odd ones
//!   after a pseudo-random number of request bytes (a request torn
//!   mid-body), even ones as soon as the answer starts (the request was
//!   carried out, its answer lost);
//! - **throttle** what clients send to a rate (bytes per second, shared by
//!   every connection, as a storage account caps one blob's ingress);
//! - **inject faults** into HTTP/1.1 requests at a rate (per mille, changeable
//!   while it runs): 503 with or without Retry-After, 500, a delay, a reset
//!   in the middle of a request, a truncated response, a request carried out
//!   and its answer dropped. Which requests fail is drawn from the seed; the
//!   kinds take turns;
//! - be **strict** ([`Strict`]): enforce what Azure Storage enforces and
//!   Azurite does not — 50,000 committed blocks per append blob (scalable
//!   down), page blobs of at most 8 TiB, a SAS past its `se` refused, and
//!   per-blob ingress targets (60 MiB/s and 500 requests/s by default,
//!   scalable down) answered with 503 ServerBusy beyond them. The rules and
//!   their sources are in `docs/azure.md` ("Limits").

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod strict;
use strict::Rules;
pub use strict::Strict;

/// What can go wrong with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Busy503RetryAfter,
    Busy503,
    Error500,
    Delay,
    ResetMidRequest,
    TruncateResponse,
    DropReply,
}

pub const ALL: [Fault; 7] = [
    Fault::Busy503RetryAfter,
    Fault::Busy503,
    Fault::Error500,
    Fault::Delay,
    Fault::ResetMidRequest,
    Fault::TruncateResponse,
    Fault::DropReply,
];

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Busy503RetryAfter => "503+retry-after",
            Fault::Busy503 => "503",
            Fault::Error500 => "500",
            Fault::Delay => "delay",
            Fault::ResetMidRequest => "reset-mid-request",
            Fault::TruncateResponse => "truncated-response",
            Fault::DropReply => "write-then-drop-reply",
        }
    }
}

/// What a proxy does besides forwarding.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Refuse this many connections first (503, close).
    pub refuse_first: u64,
    /// Cut this many connections first (see the module's header).
    pub cut_first: u64,
    /// HTTP faults of these kinds, at `per_mille` of requests.
    pub faults: Vec<Fault>,
    pub per_mille: u32,
    pub seed: u64,
    /// Client-to-server bytes per second, over all connections (0: no limit).
    pub up_bytes_per_sec: u64,
    /// Azure's rules that Azurite does not keep.
    pub strict: Option<Strict>,
}

/// What a proxy counted (and the one knob it takes while running).
#[derive(Debug, Default)]
pub struct Stats {
    pub connections: AtomicU64,
    /// Bytes clients sent through (requests: heads and bodies).
    pub bytes_up: AtomicU64,
    /// Bytes the server sent back (answers: heads and bodies), when only
    /// forwarding (no faults, no strict rules).
    pub bytes_down: AtomicU64,
    /// HTTP requests seen (fault mode).
    pub requests: AtomicU64,
    pub refused: AtomicU64,
    pub cut: AtomicU64,
    /// Faults injected, by kind (in [`ALL`]'s order).
    pub faults: [AtomicU64; 7],
    /// Faults per 1000 requests.
    pub per_mille: AtomicU32,
    /// Requests a strict proxy answered 503 ServerBusy (over a blob's target).
    pub busy: AtomicU64,
    /// Requests a strict proxy refused by another rule (block count, size, SAS expiry).
    pub strict_refused: AtomicU64,
    /// Put Page requests a strict proxy saw, and how many it answered 503.
    pub page_writes: AtomicU64,
    pub page_writes_busy: AtomicU64,
}

/// A rate shared by every connection: each write waits until the bytes
/// sent so far fit in the time since the first.
struct Throttle {
    rate: u64,
    state: Mutex<Option<(std::time::Instant, u64)>>,
}

impl Throttle {
    fn take(&self, n: u64) {
        if self.rate == 0 {
            return;
        }
        let wait = {
            let mut s = self.state.lock().unwrap();
            let (start, sent) = s.get_or_insert((std::time::Instant::now(), 0));
            *sent += n;
            let due = Duration::from_secs_f64(*sent as f64 / self.rate as f64);
            due.saturating_sub(start.elapsed())
        };
        std::thread::sleep(wait);
    }
}

/// A running proxy; it serves until the test process ends.
pub struct Proxy {
    pub port: u16,
    pub stats: Arc<Stats>,
}

struct Rng(Mutex<u64>);

impl Rng {
    fn next(&self) -> u64 {
        let mut x = self.0.lock().unwrap();
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }
}

impl Proxy {
    /// A proxy to 127.0.0.1:`target` following `plan`.
    pub fn start(target: u16, plan: Plan) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stats = Arc::new(Stats { per_mille: AtomicU32::new(plan.per_mille), ..Default::default() });
        let st = stats.clone();
        let throttle = Arc::new(Throttle { rate: plan.up_bytes_per_sec, state: Mutex::new(None) });
        std::thread::spawn(move || {
            let rng = Arc::new(Rng(Mutex::new(plan.seed | 1)));
            let kinds: Arc<Vec<Fault>> = Arc::new(plan.faults.clone());
            let rules: Option<Arc<Rules>> =
                plan.strict.map(|strict| Arc::new(Rules { strict, blobs: Mutex::new(HashMap::new()) }));
            for client in listener.incoming().flatten() {
                let n = st.connections.fetch_add(1, Relaxed);
                if n < plan.refuse_first {
                    st.refused.fetch_add(1, Relaxed);
                    refuse(client);
                    continue;
                }
                if !kinds.is_empty() || rules.is_some() {
                    let (st, rng, kinds, th, rules) =
                        (st.clone(), rng.clone(), kinds.clone(), throttle.clone(), rules.clone());
                    std::thread::spawn(move || {
                        let _ = serve_http(client, target, &st, &rng, &kinds, &th, rules.as_deref());
                    });
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else { continue };
                let x = rng.next();
                let cut = st.cut.load(Relaxed);
                let (up_limit, drop_answer) = if cut >= plan.cut_first {
                    (u64::MAX, false)
                } else {
                    st.cut.fetch_add(1, Relaxed);
                    if cut.is_multiple_of(2) {
                        (64 * 1024 + x % (40 << 20), false)
                    } else {
                        (u64::MAX, true)
                    }
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (up, th) = (st.clone(), throttle.clone());
                std::thread::spawn(move || pipe(client, server, up_limit, Some((&up.bytes_up, &th))));
                let down = st.clone();
                let unpaced = Throttle { rate: 0, state: Mutex::new(None) };
                let limit = if drop_answer { 0 } else { u64::MAX };
                std::thread::spawn(move || pipe(s2, c2, limit, Some((&down.bytes_down, &unpaced))));
            }
        });
        Self { port, stats }
    }

    /// Forward and count.
    pub fn counting(target: u16) -> Self {
        Self::start(target, Plan::default())
    }

    /// Refuse the first `n` connections with 503.
    pub fn refusing(target: u16, n: u64) -> Self {
        Self::start(target, Plan { refuse_first: n, ..Plan::default() })
    }

    /// Cut the first `n` connections.
    pub fn cutting(target: u16, n: u64, seed: u64) -> Self {
        Self::start(target, Plan { cut_first: n, seed, ..Plan::default() })
    }

    /// Pass at most `bytes_per_sec` from clients to the server.
    pub fn throttled(target: u16, bytes_per_sec: u64) -> Self {
        Self::start(target, Plan { up_bytes_per_sec: bytes_per_sec, ..Plan::default() })
    }

    /// Enforce Azure's limits that Azurite does not (see [`Strict`]).
    pub fn strict(target: u16, strict: Strict) -> Self {
        Self::start(target, Plan { strict: Some(strict), ..Plan::default() })
    }

    /// Requests answered 503 ServerBusy for going over a blob's target.
    pub fn busy(&self) -> u64 {
        self.stats.busy.load(Relaxed)
    }

    /// Put Page requests seen by the strict rules, and those answered 503.
    pub fn page_writes(&self) -> (u64, u64) {
        (self.stats.page_writes.load(Relaxed), self.stats.page_writes_busy.load(Relaxed))
    }

    /// Requests refused by the other strict rules.
    pub fn strict_refused(&self) -> u64 {
        self.stats.strict_refused.load(Relaxed)
    }

    /// Inject HTTP faults of `kinds` at `per_mille`.
    pub fn faulty(target: u16, per_mille: u32, kinds: &[Fault], seed: u64) -> Self {
        Self::start(target, Plan { faults: kinds.to_vec(), per_mille, seed, ..Plan::default() })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn connections(&self) -> u64 {
        self.stats.connections.load(Relaxed)
    }

    pub fn bytes_up(&self) -> u64 {
        self.stats.bytes_up.load(Relaxed)
    }

    /// Bytes of answers forwarded (a forwarding proxy only).
    pub fn bytes_down(&self) -> u64 {
        self.stats.bytes_down.load(Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.stats.requests.load(Relaxed)
    }

    pub fn refused(&self) -> u64 {
        self.stats.refused.load(Relaxed)
    }

    pub fn cuts(&self) -> u64 {
        self.stats.cut.load(Relaxed)
    }

    /// Change the fault rate.
    pub fn set_per_mille(&self, p: u32) {
        self.stats.per_mille.store(p, Relaxed);
    }

    pub fn count(&self, f: Fault) -> u64 {
        self.stats.faults[ALL.iter().position(|&k| k == f).unwrap()].load(Relaxed)
    }

    pub fn injected(&self) -> u64 {
        self.stats.faults.iter().map(|c| c.load(Relaxed)).sum()
    }

    pub fn summary(&self) -> Vec<(&'static str, u64)> {
        ALL.iter().map(|&f| (f.name(), self.count(f))).collect()
    }
}

/// Read the request head, answer busy, close.
fn refuse(mut client: TcpStream) {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && client.read(&mut b).is_ok_and(|n| n == 1) {
        head.push(b[0]);
    }
    let _ = client.write_all(
        b"HTTP/1.1 503 Server Busy\r\nRetry-After: 1\r\nx-ms-error-code: ServerBusy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    let _ = client.shutdown(Shutdown::Both);
}

/// Copy `from` to `to` until EOF or `limit` bytes, then close both;
/// counting (and throttling) what passes when asked to.
fn pipe(mut from: TcpStream, mut to: TcpStream, limit: u64, count: Option<(&AtomicU64, &Throttle)>) {
    let mut buf = vec![0u8; 256 << 10];
    let mut sent = 0u64;
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let n = (n as u64).min(limit - sent) as usize;
                if n == 0 {
                    break;
                }
                if let Some((_, th)) = count {
                    th.take(n as u64);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                if let Some((c, _)) = count {
                    c.fetch_add(n as u64, Relaxed);
                }
                sent += n as u64;
                if sent >= limit {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// A request or response: head (up to the blank line) and body.
struct Message {
    head: Vec<u8>,
    body: Vec<u8>,
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line)? == 0 {
            if head.is_empty() {
                return Ok(None);
            }
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" {
            return Ok(Some(head));
        }
    }
}

/// Read a body framed by Content-Length or chunked encoding (kept as sent).
fn read_body(r: &mut impl BufRead, head: &str, no_body: bool) -> std::io::Result<Vec<u8>> {
    if no_body {
        return Ok(Vec::new());
    }
    if header(head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        loop {
            let mut size_line = Vec::new();
            r.read_until(b'\n', &mut size_line)?;
            body.extend_from_slice(&size_line);
            let size =
                usize::from_str_radix(String::from_utf8_lossy(&size_line).trim().split(';').next().unwrap_or("0"), 16)
                    .unwrap_or(0);
            let mut chunk = vec![0u8; size + 2];
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk);
            if size == 0 {
                return Ok(body);
            }
        }
    }
    let len: usize = header(head, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(body)
}

fn read_message(r: &mut impl BufRead, no_body: impl Fn(&str) -> bool) -> std::io::Result<Option<Message>> {
    let Some(head) = read_head(r)? else { return Ok(None) };
    let text = String::from_utf8_lossy(&head).to_string();
    let body = read_body(r, &text, no_body(&text))?;
    Ok(Some(Message { head, body }))
}

fn canned(status: &str, retry_after: bool) -> Vec<u8> {
    let ra = if retry_after { "Retry-After: 1\r\n" } else { "" };
    let code = if status.starts_with("503") { "ServerBusy" } else { "InternalError" };
    format!("HTTP/1.1 {status}\r\n{ra}x-ms-error-code: {code}\r\nContent-Length: 0\r\n\r\n").into_bytes()
}

/// Forward HTTP/1.1 requests one at a time, injecting faults.
fn serve_http(
    client: TcpStream,
    target: u16,
    st: &Stats,
    rng: &Rng,
    kinds: &[Fault],
    throttle: &Throttle,
    rules: Option<&Rules>,
) -> std::io::Result<()> {
    let (rate, counts, requests) = (&st.per_mille, &st.faults, &st.requests);
    let mut from_client = BufReader::new(client.try_clone()?);
    let mut to_client = client;
    let mut upstream: Option<(TcpStream, BufReader<TcpStream>)> = None;
    loop {
        let Some(req) = read_message(&mut from_client, |_| false)? else { return Ok(()) };
        requests.fetch_add(1, Relaxed);
        let is_head = req.head.starts_with(b"HEAD ");
        let head_text = String::from_utf8_lossy(&req.head).into_owned();
        if let Some(refusal) = rules.and_then(|r| r.check(&head_text, req.body.len(), st)) {
            to_client.write_all(&refusal)?;
            continue;
        }
        // Which requests fail is random; the kinds take turns, so a few
        // dozen faults cover them all.
        let injected: u64 = counts.iter().map(|c| c.load(Relaxed)).sum();
        let fault = (!kinds.is_empty() && (rng.next() % 1000) < u64::from(rate.load(Relaxed)))
            .then(|| kinds[(injected % kinds.len() as u64) as usize]);
        if let Some(f) = fault {
            counts[ALL.iter().position(|&k| k == f).unwrap()].fetch_add(1, Relaxed);
        }
        match fault {
            Some(Fault::Busy503RetryAfter) => {
                to_client.write_all(&canned("503 Server Busy", true))?;
                continue;
            }
            Some(Fault::Busy503) => {
                to_client.write_all(&canned("503 Server Busy", false))?;
                continue;
            }
            Some(Fault::Error500) => {
                to_client.write_all(&canned("500 Internal Server Error", false))?;
                continue;
            }
            Some(Fault::Delay) => std::thread::sleep(Duration::from_millis(100 + rng.next() % 900)),
            _ => {}
        }
        if upstream.is_none() {
            let s = TcpStream::connect(("127.0.0.1", target))?;
            upstream = Some((s.try_clone()?, BufReader::new(s)));
        }
        let Some((up, up_reader)) = upstream.as_mut() else { return Ok(()) };
        if fault == Some(Fault::ResetMidRequest) {
            // The server gets the head and half the body, then both sides go.
            up.write_all(&req.head)?;
            up.write_all(&req.body[..req.body.len() / 2])?;
            let _ = up.shutdown(Shutdown::Both);
            reset(&to_client);
            return Ok(());
        }
        throttle.take((req.head.len() + req.body.len()) as u64);
        up.write_all(&req.head)?;
        up.write_all(&req.body)?;
        st.bytes_up.fetch_add((req.head.len() + req.body.len()) as u64, Relaxed);
        let Some(resp) = read_message(up_reader, |h| {
            is_head || h.starts_with("HTTP/1.1 204") || h.starts_with("HTTP/1.1 304") || h.starts_with("HTTP/1.1 1")
        })?
        else {
            return Ok(());
        };
        if let Some(r) = rules {
            let status = String::from_utf8_lossy(&resp.head);
            r.done(&head_text, status.lines().next().unwrap_or(""));
        }
        match fault {
            Some(Fault::DropReply) => {
                let _ = to_client.shutdown(Shutdown::Both);
                return Ok(());
            }
            Some(Fault::TruncateResponse) => {
                let mut all = resp.head;
                all.extend_from_slice(&resp.body);
                let cut = (all.len() / 2).max(1);
                to_client.write_all(&all[..cut])?;
                let _ = to_client.shutdown(Shutdown::Both);
                return Ok(());
            }
            _ => {
                to_client.write_all(&resp.head)?;
                to_client.write_all(&resp.body)?;
            }
        }
    }
}

/// Close with a TCP reset (SO_LINGER 0) once the last handle is dropped.
fn reset(s: &TcpStream) {
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on a socket this process owns, with a pointer to a
    // live `linger` and its exact size.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A server that reads everything and counts it.
    fn sink() -> (u16, Arc<AtomicU64>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let got = Arc::new(AtomicU64::new(0));
        let g = got.clone();
        std::thread::spawn(move || {
            for mut c in l.incoming().flatten() {
                let g = g.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n) = c.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        g.fetch_add(n as u64, Relaxed);
                    }
                });
            }
        });
        (port, got)
    }

    #[test]
    fn counts_refuses_cuts_and_throttles() {
        let (port, got) = sink();
        let p = Proxy::counting(port);
        let mut c = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
        c.write_all(&[7u8; 100_000]).unwrap();
        drop(c);
        assert!(crate::process::poll(5, || got.load(Relaxed) == 100_000 && p.bytes_up() == 100_000));
        assert_eq!(p.connections(), 1);

        let r = Proxy::refusing(port, 1);
        let mut c = TcpStream::connect(("127.0.0.1", r.port)).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert_eq!(r.refused(), 1);

        // 256 KiB at 512 KiB/s: about half a second, not at once.
        let t = Proxy::throttled(port, 512 << 10);
        let before = got.load(Relaxed);
        let started = Instant::now();
        let mut c = TcpStream::connect(("127.0.0.1", t.port)).unwrap();
        c.write_all(&[1u8; 256 << 10]).unwrap();
        drop(c);
        assert!(crate::process::poll(10, || got.load(Relaxed) == before + (256 << 10)));
        assert!(started.elapsed() >= Duration::from_millis(350), "throttle let it through in {:?}", started.elapsed());
    }
}
