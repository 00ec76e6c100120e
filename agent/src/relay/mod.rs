//! The zstd relay: a sender (`sync --to relay:https://HOST:PORT/DISK`) ships
//! compressed deltas to `diskferry-agent receive` in the destination region,
//! which writes them to its own destination (a page blob in-region, or a
//! file) through the same [`Sink`](crate::sink::Sink) a direct sync uses.
//! The receiver's sink keeps the generations, the fence, the journal and the
//! recovery points; the sender drives it remotely, call for call.
//!
//! ## Protocol (HTTP/1.1, TLS off loopback)
//!
//! Every request carries `Authorization: Bearer TOKEN`; a wrong or missing
//! token gets `401` and the connection is closed. Bodies are binary
//! (`diskferry_core::relay`), errors are JSON `{"error": "...", "reason": "..."}`.
//!
//! | request | body | answer |
//! |---------|------|--------|
//! | `POST /v1/disks/{disk}/sessions` | JSON: source id, disk size, chunk size, force | 200, header `x-diskferry-session`, body: prior message |
//! | `POST /v1/sessions/{id}/begin` | JSON: generation | 204 |
//! | `PUT /v1/sessions/{id}/windows/{seq}` | window message | 204 once applied |
//! | `GET /v1/sessions/{id}` | | JSON: state, generation, last applied window |
//! | `POST /v1/sessions/{id}/commit` | manifest v1 | 204 once durable and published |
//! | `DELETE /v1/sessions/{id}` | | 204 |
//!
//! Windows are applied in order, once: a window the receiver already
//! applied is acknowledged again without touching the destination. When a
//! connection drops, the sender reconnects, asks which window was applied
//! last and sends only the rest. When the sender itself dies, the next sync
//! opens a new session (replacing the old one) and the receiver's journal
//! tells what is durable, exactly as for a direct sync.

//!
//! This module is the protocol and the sending side; the receiving side
//! (server, sessions, its metrics) is `crate::receive`.

pub mod client;
pub mod sender;
pub mod tls;

use std::fmt;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Header naming a session in the answer to an open.
pub const SESSION_HEADER: &str = "x-diskferry-session";
/// Largest request body: a 64 MiB window stored raw, with its frame
/// headers and states.
pub const MAX_BODY: u64 = (64 << 20) + (4 << 20);
/// Largest control body (JSON, or a manifest at commit).
pub const MAX_CONTROL_BODY: u64 = 512 << 20;

/// Open a session for a disk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenRequest {
    pub source_id: String,
    pub disk_size: u64,
    pub chunk_size: u64,
    pub force: bool,
    /// What the sender's disks hold together, for the receiver to record in
    /// each recovery point (absent from senders that do not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<String>,
    /// The sender's run's fencing number, for the receiver's page blob to
    /// check and record (absent from senders that have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<u64>,
}

/// Begin a generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeginRequest {
    pub generation: u64,
}

/// Where a session stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionState {
    pub state: String,
    pub generation: Option<u64>,
    /// The last window applied, if any.
    pub applied: Option<u64>,
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// A short machine-readable cause (`token`, `digest`, `bomb`, `too_large`, ...).
    pub reason: String,
}

/// A disk name a receiver accepts: a file or blob name without a path.
/// An address as an error may show it: no query, no user or password
/// (either may be a secret someone pasted).
fn shown(s: &str) -> String {
    let (base, query) = match s.split_once('?') {
        Some((b, _)) => (b, "?<redacted>"),
        None => (s, ""),
    };
    let base = match (base.find("://"), base.rfind('@')) {
        (Some(i), Some(j)) if j > i => format!("{}<redacted>{}", &base[..i + 3], &base[j..]),
        _ => base.to_owned(),
    };
    format!("{base}{query}")
}

pub fn check_disk_name(name: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > 128 || !name.chars().all(ok_char) || name.starts_with('.') {
        bail!("disk name {name:?} is invalid: use 1 to 128 letters, digits, '-', '_' or '.', not starting with '.'");
    }
    Ok(())
}

/// `relay:https://HOST:PORT/DISK` (or `http://` to a loopback address).
#[derive(Clone, PartialEq, Eq)]
pub struct RelayAddress {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub disk: String,
}

impl RelayAddress {
    pub fn parse(s: &str) -> Result<Self> {
        // Errors show the address without its query or credentials.
        let shown = shown(s);
        let url = url::Url::parse(s).with_context(|| format!("relay address {shown:?} is not a URL"))?;
        if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
            bail!(
                "relay address {shown:?} must not carry credentials or a query: the token goes in --relay-token-file"
            );
        }
        let tls = match url.scheme() {
            "https" => true,
            "http" => false,
            other => bail!("relay address {shown:?}: scheme {other:?} is not https (or http to loopback)"),
        };
        let host = url.host_str().context("relay address has no host")?.trim_matches(['[', ']']).to_owned();
        let port = url.port_or_known_default().context("relay address has no port")?;
        let disk = url.path().trim_start_matches('/').to_owned();
        check_disk_name(&disk).with_context(|| format!("relay address {shown:?} must end with /DISK-NAME"))?;
        if !tls && !is_loopback_host(&host) {
            bail!("relay address {shown:?}: plain http is allowed only to a loopback address; use https");
        }
        Ok(Self { tls, host, port, disk })
    }

    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for RelayAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}/{}", if self.tls { "https" } else { "http" }, self.authority(), self.disk)
    }
}

impl fmt::Debug for RelayAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelayAddress({self})")
    }
}

pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The shared secret of a relay. Never printed: `Debug` shows its length.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(<{} bytes>)", self.0.len())
    }
}

/// A token file's text. A token others may read is a token others may
/// have: as ssh does with a private key, one with any group or other
/// permission is refused.
pub fn read_token_file(f: &Path) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode =
        std::fs::metadata(f).with_context(|| format!("cannot read token file {}", f.display()))?.permissions().mode();
    if mode & 0o077 != 0 {
        bail!("token file {} is readable by others (mode {:o}): chmod 600 it", f.display(), mode & 0o777);
    }
    std::fs::read_to_string(f).with_context(|| format!("cannot read token file {}", f.display()))
}

/// Environment variable a token may come from instead of a file.
pub const TOKEN_ENV: &str = "DISKFERRY_RELAY_TOKEN";
/// Environment variables a worker (`run --job`) takes the receiver's
/// certificate pin and CA file from (a job spec holds neither).
pub const FINGERPRINT_ENV: &str = "DISKFERRY_RELAY_FINGERPRINT";
pub const CA_ENV: &str = "DISKFERRY_RELAY_CA";

impl Token {
    /// A token of at least 16 visible ASCII characters.
    pub fn new(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.len() < 16 || !s.bytes().all(|b| b.is_ascii_graphic()) {
            bail!("the relay token must be at least 16 visible ASCII characters (e.g. `openssl rand -hex 32`)");
        }
        Ok(Self(s.to_owned()))
    }

    /// From `file` if given, else from `DISKFERRY_RELAY_TOKEN`.
    pub fn load(file: Option<&Path>) -> Result<Option<Self>> {
        if let Some(f) = file {
            let s = read_token_file(f)?;
            return Self::new(&s).with_context(|| format!("token file {}", f.display())).map(Some);
        }
        match std::env::var(TOKEN_ENV) {
            Ok(s) => Self::new(&s).with_context(|| format!("${TOKEN_ENV}")).map(Some),
            Err(_) => Ok(None),
        }
    }

    pub fn header_value(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Does `header` (an `Authorization` value) carry this token? Constant
    /// time in the token's bytes.
    pub fn admits(&self, header: Option<&[u8]>) -> bool {
        use subtle::ConstantTimeEq;
        let Some(given) = header.and_then(|h| h.strip_prefix(b"Bearer ")) else { return false };
        // Compare digests: equal lengths whatever was sent.
        let a = blake3::hash(given);
        let b = blake3::hash(self.0.as_bytes());
        a.as_bytes().ct_eq(b.as_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let a = RelayAddress::parse("https://relay.example:7443/disk-os").unwrap();
        assert_eq!((a.tls, a.host.as_str(), a.port, a.disk.as_str()), (true, "relay.example", 7443, "disk-os"));
        assert!(RelayAddress::parse("http://127.0.0.1:9/d0").is_ok());
        assert!(RelayAddress::parse("http://[::1]:9/d0").is_ok());
        for bad in [
            "http://relay.example:80/d0",
            "https://h:1/",
            "https://h:1/a/b",
            "https://u:p@h:1/d",
            "https://h:1/d?sig=x",
            "ftp://h/d",
            "https://h:1/.hidden",
        ] {
            assert!(RelayAddress::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn tokens() {
        let t = Token::new("0123456789abcdef-secret").unwrap();
        assert!(t.admits(Some(b"Bearer 0123456789abcdef-secret")));
        assert!(!t.admits(Some(b"Bearer 0123456789abcdef-secreT")));
        assert!(!t.admits(Some(b"0123456789abcdef-secret")));
        assert!(!t.admits(None));
        assert!(Token::new("short").is_err());
        assert!(!format!("{t:?}").contains("secret"));
    }
}
