//! An HTTP/1.1 fault proxy between the agent and storage (Azurite): at a
//! set rate (per mille of requests) it answers 503 with or without
//! Retry-After, 500, delays a request, resets the connection in the middle of
//! a request (the server sees half a body), truncates a response, or carries
//! a request out and drops its answer. Which requests fail is drawn from a
//! seed; the kinds take turns. Counts what it injected, by kind.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

pub struct FaultProxy {
    pub port: u16,
    /// Faults per 1000 requests (changeable while running).
    pub per_mille: Arc<AtomicU32>,
    pub counts: Arc<[AtomicU64; 7]>,
    pub requests: Arc<AtomicU64>,
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

impl FaultProxy {
    /// Proxy to 127.0.0.1:`target`, injecting `kinds` at `per_mille`.
    pub fn start(target: u16, per_mille: u32, kinds: &[Fault], seed: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let rate = Arc::new(AtomicU32::new(per_mille));
        let counts: Arc<[AtomicU64; 7]> = Arc::new(Default::default());
        let requests = Arc::new(AtomicU64::new(0));
        let rng = Arc::new(Rng(Mutex::new(seed | 1)));
        let kinds: Arc<Vec<Fault>> = Arc::new(kinds.to_vec());
        let (r, c, n) = (rate.clone(), counts.clone(), requests.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (r, c, n, rng, kinds) = (r.clone(), c.clone(), n.clone(), rng.clone(), kinds.clone());
                std::thread::spawn(move || {
                    let _ = serve(client, target, &r, &c, &n, &rng, &kinds);
                });
            }
        });
        Self { port, per_mille: rate, counts, requests }
    }

    pub fn count(&self, f: Fault) -> u64 {
        self.counts[ALL.iter().position(|&k| k == f).unwrap()].load(Relaxed)
    }

    pub fn injected(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    pub fn summary(&self) -> Vec<(&'static str, u64)> {
        ALL.iter().map(|&f| (f.name(), self.count(f))).collect()
    }
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

fn serve(
    client: TcpStream,
    target: u16,
    rate: &AtomicU32,
    counts: &[AtomicU64; 7],
    requests: &AtomicU64,
    rng: &Rng,
    kinds: &[Fault],
) -> std::io::Result<()> {
    let mut from_client = BufReader::new(client.try_clone()?);
    let mut to_client = client;
    let mut upstream: Option<(TcpStream, BufReader<TcpStream>)> = None;
    loop {
        let Some(req) = read_message(&mut from_client, |_| false)? else { return Ok(()) };
        requests.fetch_add(1, Relaxed);
        let is_head = req.head.starts_with(b"HEAD ");
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
        up.write_all(&req.head)?;
        up.write_all(&req.body)?;
        let Some(resp) = read_message(up_reader, |h| {
            is_head || h.starts_with("HTTP/1.1 204") || h.starts_with("HTTP/1.1 304") || h.starts_with("HTTP/1.1 1")
        })?
        else {
            return Ok(());
        };
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
