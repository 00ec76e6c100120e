//! Where a page blob is and how to reach it, without ever printing a secret.
//!
//! `pageblob:URL` names the blob: `https://ACCOUNT.blob.core.windows.net/C/B.vhd`
//! or, for Azurite and other path-style endpoints,
//! `http://127.0.0.1:10000/ACCOUNT/C/B.vhd`. Credentials, in this order:
//!
//! 1. a SAS in the URL's query;
//! 2. an account key (`AZURE_STORAGE_CONNECTION_STRING` with `AccountKey=`,
//!    or `AZURE_STORAGE_KEY`): the agent signs short-lived SAS tokens itself
//!    (a container SAS for blob operations, an account SAS to create the
//!    container), HMAC-SHA256 with the key, service version 2020-12-06;
//! 3. an Entra credential (managed identity on a worker VM, or the Azure CLI)
//!    for https URLs.
//!
//! [`redact`] strips `sig=` from anything shown to a person.

use std::fmt;

use anyhow::{anyhow, bail, Context, Result};
use azure_core::credentials::Secret;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use url::Url;

/// Signed version of the SAS tokens the agent makes.
const SAS_VERSION: &str = "2020-12-06";
/// Lifetime of a self-signed SAS: long enough for a large sync, short enough
/// that a leaked token soon stops working.
const SAS_LIFETIME: time::Duration = time::Duration::hours(12);

/// A page blob's address.
#[derive(Clone, PartialEq, Eq)]
pub struct BlobAddress {
    /// Scheme, host, port and (path-style) account: where containers live.
    pub service: Url,
    pub account: String,
    pub container: String,
    /// The page blob's name inside the container (may contain `/`).
    pub blob: String,
    /// The SAS query from the URL, if any (never printed).
    pub sas: Option<String>,
}

impl fmt::Debug for BlobAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobAddress({self})")
    }
}

impl fmt::Display for BlobAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.service.as_str().trim_end_matches('/'), self.container, self.blob)?;
        if self.sas.is_some() {
            f.write_str("?<sas>")?;
        }
        Ok(())
    }
}

impl BlobAddress {
    pub fn parse(s: &str) -> Result<Self> {
        let url = Url::parse(s).map_err(|e| anyhow!("{:?} is not a URL: {e}", redact(s)))?;
        if !matches!(url.scheme(), "http" | "https") {
            bail!("page blob URL {} must be http or https", redact(s));
        }
        let host = url.host_str().ok_or_else(|| anyhow!("page blob URL {} has no host", redact(s)))?.to_owned();
        let mut segs: Vec<String> =
            url.path_segments().map(|p| p.filter(|x| !x.is_empty()).map(str::to_owned).collect()).unwrap_or_default();
        // Path-style (Azurite, IP addresses, localhost): the account is the first segment.
        let path_style = host.parse::<std::net::IpAddr>().is_ok() || host == "localhost";
        let account = if path_style {
            if segs.is_empty() {
                bail!("page blob URL {} lacks the account in its path", redact(s));
            }
            segs.remove(0)
        } else {
            host.split('.').next().unwrap_or_default().to_owned()
        };
        if segs.len() < 2 {
            bail!("page blob URL {} must name a container and a blob", redact(s));
        }
        let container = segs.remove(0);
        let blob = segs.join("/");
        let mut service = url.clone();
        service.set_query(None);
        service.set_fragment(None);
        service.set_path(if path_style { &account } else { "" });
        let sas = url.query().filter(|q| q.contains("sig=")).map(str::to_owned);
        Ok(Self { service, account, container, blob, sas })
    }

    /// URL of a blob in the same container (`name`), without credentials.
    pub fn blob_url(&self, name: &str) -> Result<Url> {
        let base = self.service.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}/{}/{name}", self.container)).context("bad blob URL")
    }

    pub fn container_url(&self) -> Result<Url> {
        let base = self.service.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}/{}", self.container)).context("bad container URL")
    }
}

/// An account key, held as a secret.
#[derive(Clone)]
pub struct AccountKey {
    pub account: String,
    key: Secret,
}

impl fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountKey({}, <redacted>)", self.account)
    }
}

impl AccountKey {
    pub fn new(account: &str, key: &str) -> Self {
        Self { account: account.to_owned(), key: Secret::new(key.to_owned()) }
    }

    /// From `AZURE_STORAGE_CONNECTION_STRING` or `AZURE_STORAGE_KEY`, for `account`.
    pub fn from_env(account: &str) -> Result<Option<Self>> {
        if let Ok(cs) = std::env::var("AZURE_STORAGE_CONNECTION_STRING") {
            let mut name = None;
            let mut key = None;
            for part in cs.split(';') {
                match part.split_once('=') {
                    Some(("AccountName", v)) => name = Some(v.to_owned()),
                    Some(("AccountKey", v)) => key = Some(v.to_owned()),
                    _ => {}
                }
            }
            if let (Some(n), Some(k)) = (name, key) {
                if n != account {
                    bail!("AZURE_STORAGE_CONNECTION_STRING is for account {n}, the URL names {account}");
                }
                return Ok(Some(Self::new(&n, &k)));
            }
        }
        Ok(std::env::var("AZURE_STORAGE_KEY").ok().map(|k| Self::new(account, &k)))
    }

    fn sign(&self, string_to_sign: &str) -> Result<String> {
        azure_core::hmac::hmac_sha256(string_to_sign, &self.key)
            .map_err(|_| anyhow!("the account key is not valid base64"))
    }

    /// A container SAS (read, add, create, write, delete, list).
    pub fn container_sas(&self, container: &str, now: OffsetDateTime) -> Result<String> {
        let (st, se) = window(now)?;
        let sp = "racwdl";
        let resource = format!("/blob/{}/{container}", self.account);
        let to_sign = [sp, &st, &se, &resource, "", "", "", SAS_VERSION, "c", "", "", "", "", "", "", ""].join("\n");
        let sig = self.sign(&to_sign)?;
        Ok(query(&[("sv", SAS_VERSION), ("sr", "c"), ("sp", sp), ("st", &st), ("se", &se), ("sig", &sig)]))
    }

    /// An account SAS for the blob service (enough to create a container).
    pub fn account_sas(&self, now: OffsetDateTime) -> Result<String> {
        let (st, se) = window(now)?;
        let (sp, ss, srt) = ("rwdlac", "b", "sco");
        let to_sign = format!("{}\n{sp}\n{ss}\n{srt}\n{st}\n{se}\n\n\n{SAS_VERSION}\n\n", self.account);
        let sig = self.sign(&to_sign)?;
        Ok(query(&[("sv", SAS_VERSION), ("ss", ss), ("srt", srt), ("sp", sp), ("st", &st), ("se", &se), ("sig", &sig)]))
    }
}

/// Valid from five minutes ago (clock skew) for [`SAS_LIFETIME`].
fn window(now: OffsetDateTime) -> Result<(String, String)> {
    let fmt = |t: OffsetDateTime| {
        t.replace_nanosecond(0).map_err(|e| anyhow!("{e}")).and_then(|t| t.format(&Rfc3339).map_err(|e| anyhow!("{e}")))
    };
    Ok((fmt(now - time::Duration::minutes(5))?, fmt(now + SAS_LIFETIME)?))
}

fn query(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

/// `s` with every SAS signature (`sig=...`) replaced by `sig=REDACTED`.
pub fn redact(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("sig=") {
        out.push_str(&rest[..i + 4]);
        out.push_str("REDACTED");
        let tail = &rest[i + 4..];
        let end =
            tail.find(|c: char| matches!(c, '&' | '"' | '\'' | ')' | '>') || c.is_whitespace()).unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_url_styles() {
        let a = BlobAddress::parse("http://127.0.0.1:10000/devstoreaccount1/disks/vm1/os.vhd").unwrap();
        assert_eq!(
            (a.account.as_str(), a.container.as_str(), a.blob.as_str()),
            ("devstoreaccount1", "disks", "vm1/os.vhd")
        );
        assert_eq!(
            a.blob_url("vm1/os.vhd.manifest").unwrap().as_str(),
            "http://127.0.0.1:10000/devstoreaccount1/disks/vm1/os.vhd.manifest"
        );
        let b = BlobAddress::parse("https://acct.blob.core.windows.net/c/d.vhd?sv=2020&sig=SECRET%2B&se=x").unwrap();
        assert_eq!((b.account.as_str(), b.container.as_str()), ("acct", "c"));
        assert!(b.sas.is_some());
        assert!(!format!("{b} {b:?}").contains("SECRET"));
        assert!(BlobAddress::parse("https://acct.blob.core.windows.net/onlycontainer").is_err());
        assert!(BlobAddress::parse("ftp://x/y/z").is_err());
    }

    #[test]
    fn redacts_signatures() {
        assert_eq!(redact("u?sv=1&sig=abc%2Bdef&se=2"), "u?sv=1&sig=REDACTED&se=2");
        assert_eq!(redact("a sig=x b sig=y"), "a sig=REDACTED b sig=REDACTED");
        let e = BlobAddress::parse("nonsense?sig=TOPSECRET").unwrap_err();
        assert!(!format!("{e:#}").contains("TOPSECRET"));
    }

    #[test]
    fn signs_a_container_sas() {
        let k = AccountKey::new(
            "devstoreaccount1",
            "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
        );
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let sas = k.container_sas("disks", now).unwrap();
        assert!(
            sas.starts_with(
                "sv=2020-12-06&sr=c&sp=racwdl&st=2027-01-15T07%3A55%3A00Z&se=2027-01-15T20%3A00%3A00Z&sig="
            ),
            "{sas}"
        );
        // Same input, same signature; another key, another one.
        assert_eq!(sas, k.container_sas("disks", now).unwrap());
        let other = AccountKey::new("devstoreaccount1", "AAAA");
        assert_ne!(sas, other.container_sas("disks", now).unwrap());
        assert!(!format!("{k:?}").contains("Eby8"));
    }
}
