//! What each relay token may do on a receiver. One token no longer controls
//! every disk: the receiver's token file holds one line per token,
//!
//! ```text
//! TOKEN                              # every disk, no --force
//! TOKEN disks=web-os,web-lun*        # these disks only (a trailing * matches a prefix)
//! TOKEN disks=db-* allow=force       # may also pass --force (overwrite, resize)
//! ```
//!
//! A token may open, feed, commit, look at and close sessions of the disks it
//! names, and nothing else. Deleting recovery points is never a sender's to
//! ask: the receiver trims by its own `--keep` and `--min-retention`.
//! `$DISKFERRY_RELAY_TOKEN` is one bare token.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::relay::{Token, TOKEN_ENV};

/// What one token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Disk names, or prefixes ending with `*`; `*` alone: every disk.
    disks: Vec<String>,
    /// May pass `force`.
    pub force: bool,
}

impl Grant {
    pub fn every_disk() -> Self {
        Self { disks: vec!["*".to_owned()], force: false }
    }

    /// May this token touch `disk`?
    pub fn disk(&self, disk: &str) -> bool {
        self.disks.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => disk.starts_with(prefix),
            None => p == disk,
        })
    }
}

/// Every token of a receiver with its grant.
#[derive(Debug)]
pub struct Grants(Vec<(Token, Grant)>);

impl Grants {
    /// One token with every disk (and no force).
    pub fn single(t: Token) -> Self {
        Self(vec![(t, Grant::every_disk())])
    }

    /// The token file's lines, else `$DISKFERRY_RELAY_TOKEN`; `None` if neither.
    pub fn load(file: Option<&Path>) -> Result<Option<Self>> {
        let Some(f) = file else {
            return Ok(std::env::var(TOKEN_ENV).ok().map(|s| Token::new(&s)).transpose()?.map(Self::single));
        };
        let text = crate::relay::read_token_file(f)?;
        Self::parse(&text).with_context(|| format!("token file {}", f.display())).map(Some)
    }

    /// Parse a token file's text.
    pub fn parse(text: &str) -> Result<Self> {
        let mut out = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let token = Token::new(words.next().unwrap_or_default()).with_context(|| format!("line {}", n + 1))?;
            let mut grant = Grant::every_disk();
            for w in words {
                match w.split_once('=') {
                    Some(("disks", list)) if !list.is_empty() => {
                        grant.disks = list.split(',').map(str::to_owned).collect();
                        for d in grant.disks.iter().filter(|d| *d != "*") {
                            crate::relay::check_disk_name(d.trim_end_matches('*'))
                                .with_context(|| format!("line {}", n + 1))?;
                        }
                    }
                    Some(("allow", what)) => {
                        for a in what.split(',') {
                            match a {
                                "force" => grant.force = true,
                                other => bail!("line {}: unknown right {other:?} (allow=force)", n + 1),
                            }
                        }
                    }
                    _ => bail!("line {}: {w:?} is neither disks=NAME,... nor allow=force", n + 1),
                }
            }
            out.push((token, grant));
        }
        if out.is_empty() {
            bail!("no token in it");
        }
        Ok(Self(out))
    }

    /// The grant of the token `header` (an `Authorization` value) carries.
    /// Every token is compared (in constant time), whichever matches.
    pub fn admit(&self, header: Option<&[u8]>) -> Option<&Grant> {
        let mut found = None;
        for (t, g) in &self.0 {
            if t.admits(header) && found.is_none() {
                found = Some(g);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_grant_disks_and_force() {
        let g = Grants::parse(
            "# receiver tokens\n\
             aaaaaaaaaaaaaaaaaaaa\n\
             bbbbbbbbbbbbbbbbbbbb disks=web-os,web-lun*\n\
             cccccccccccccccccccc disks=db allow=force  # the database's\n",
        )
        .unwrap();
        let admit = |t: &str| g.admit(Some(format!("Bearer {t}").as_bytes())).cloned();
        let a = admit("aaaaaaaaaaaaaaaaaaaa").unwrap();
        assert!(a.disk("anything") && !a.force);
        let b = admit("bbbbbbbbbbbbbbbbbbbb").unwrap();
        assert!(b.disk("web-os") && b.disk("web-lun0") && !b.disk("web-osx") && !b.disk("db"));
        let c = admit("cccccccccccccccccccc").unwrap();
        assert!(c.disk("db") && c.force && !c.disk("db2"));
        assert!(admit("dddddddddddddddddddd").is_none());
        for bad in [
            "",
            "short",
            "aaaaaaaaaaaaaaaaaaaa allow=delete",
            "aaaaaaaaaaaaaaaaaaaa disks=../x",
            "aaaaaaaaaaaaaaaaaaaa colour=red",
        ] {
            assert!(Grants::parse(bad).is_err(), "{bad:?}");
        }
    }
}
