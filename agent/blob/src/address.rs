//! Where a blob is, without ever printing a secret.
//!
//! `pageblob:URL` names the blob: `https://ACCOUNT.blob.core.windows.net/C/B.vhd`
//! or, for Azurite and other path-style endpoints,
//! `http://127.0.0.1:10000/ACCOUNT/C/B.vhd`. A SAS in the URL's query is kept
//! apart ([`BlobAddress::sas`]) and never shown: [`redact`] strips `sig=`
//! from anything meant for a person.

use std::fmt;

use anyhow::{anyhow, bail, Context, Result};
use url::Url;

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

/// Path-style hosts (an IP address, `localhost`) are an emulator's (Azurite):
/// Azure Storage itself is addressed by host name, `ACCOUNT.blob.<suffix>`.
fn is_path_style(host: &str) -> bool {
    host.parse::<std::net::IpAddr>().is_ok() || host == "localhost"
}

impl BlobAddress {
    /// Whether this is an emulator's address (path-style: the account in
    /// the path), where Azurite's own rules apply.
    pub fn is_emulator(&self) -> bool {
        self.service.host_str().is_some_and(is_path_style)
    }

    pub fn parse(s: &str) -> Result<Self> {
        let url = Url::parse(s).map_err(|e| anyhow!("{:?} is not a URL: {e}", redact(s)))?;
        if !matches!(url.scheme(), "http" | "https") {
            bail!("page blob URL {} must be http or https", redact(s));
        }
        let host = url.host_str().ok_or_else(|| anyhow!("page blob URL {} has no host", redact(s)))?.to_owned();
        let mut segs: Vec<String> =
            url.path_segments().map(|p| p.filter(|x| !x.is_empty()).map(str::to_owned).collect()).unwrap_or_default();
        // Path-style (Azurite, IP addresses, localhost): the account is the first segment.
        let path_style = is_path_style(&host);
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

    /// A container, with an optional prefix inside it (in [`Self::blob`],
    /// possibly empty): `https://ACCOUNT.blob.core.windows.net/C[/PREFIX]`.
    pub fn parse_container(s: &str) -> Result<Self> {
        let url = Url::parse(s).map_err(|e| anyhow!("{:?} is not a URL: {e}", redact(s)))?;
        if !matches!(url.scheme(), "http" | "https") {
            bail!("container URL {} must be http or https", redact(s));
        }
        let host = url.host_str().unwrap_or_default();
        let path_style = is_path_style(host);
        let segs = url.path_segments().map_or(0, |p| p.filter(|x| !x.is_empty()).count());
        let need = if path_style { 2 } else { 1 };
        if segs < need {
            bail!("container URL {} must name a container", redact(s));
        }
        if segs > need {
            return Self::parse(s);
        }
        // A placeholder blob name to parse with, then none.
        let (base, query) = s.split_once('?').map_or((s, None), |(b, q)| (b, Some(q)));
        let with = format!("{}/x{}", base.trim_end_matches('/'), query.map_or(String::new(), |q| format!("?{q}")));
        let mut a = Self::parse(&with)?;
        a.blob.clear();
        Ok(a)
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
}
