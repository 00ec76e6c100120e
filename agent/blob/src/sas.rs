//! SAS tokens signed with an account key.
//!
//! With an account key (`AZURE_STORAGE_CONNECTION_STRING` with `AccountKey=`,
//! or `AZURE_STORAGE_KEY`) the agent signs short-lived SAS tokens itself: a
//! container SAS for blob operations, and an account SAS that only creates
//! containers (`srt=c`, `sp=c`): a leaked token reaches no other container.
//! Against an emulator the account SAS also covers objects, because Azurite
//! refuses snapshot requests under a container SAS. HMAC-SHA256 with the
//! key, service version 2020-12-06; `agent/blob/tests/key_sas.rs` checks
//! both against the Python SDK's signatures.

use std::fmt;

use anyhow::{anyhow, bail, Result};
use azure_core::credentials::Secret;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Signed version of the SAS tokens the agent makes.
const SAS_VERSION: &str = "2020-12-06";
/// Lifetime of a self-signed SAS: short enough that a leaked token soon
/// stops working; a sync that runs longer gets new ones ([`Signer`]).
const SAS_LIFETIME: time::Duration = time::Duration::hours(12);

/// Overrides [`SAS_LIFETIME`] (seconds, at least 10): for tests of renewal,
/// or a policy that wants shorter-lived tokens.
pub const SAS_LIFETIME_ENV: &str = "DISKFERRY_SAS_LIFETIME_SECS";

/// The SAS tokens of one container, signed with the account key and signed
/// again once half their lifetime has passed: a sync of any length never
/// sends an expired one.
pub struct Signer {
    key: AccountKey,
    container: String,
    scope: AccountScope,
    lifetime: time::Duration,
    /// (container SAS, account SAS, when to sign again)
    current: std::sync::Mutex<(String, String, OffsetDateTime)>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({}/{}, <redacted>)", self.key.account, self.container)
    }
}

impl Signer {
    /// `emulator`: the account is Azurite's (see [`AccountScope`]).
    pub fn new(key: AccountKey, container: &str, emulator: bool) -> Result<Self> {
        let scope = if emulator { AccountScope::Emulator } else { AccountScope::CreateContainer };
        let lifetime = match std::env::var(SAS_LIFETIME_ENV) {
            Ok(v) => {
                let secs: i64 = v.parse().map_err(|_| anyhow!("{SAS_LIFETIME_ENV}={v} is not a number of seconds"))?;
                if secs < 10 {
                    bail!("{SAS_LIFETIME_ENV}={v}: at least 10 seconds");
                }
                time::Duration::seconds(secs)
            }
            Err(_) => SAS_LIFETIME,
        };
        let now = OffsetDateTime::now_utc();
        let first = (
            key.container_sas_for(container, now, lifetime)?,
            key.account_sas_for(scope, now, lifetime)?,
            now + lifetime / 2,
        );
        Ok(Self { key, container: container.to_owned(), scope, lifetime, current: std::sync::Mutex::new(first) })
    }

    /// The container SAS and the account SAS to send now.
    pub fn tokens(&self) -> Result<(String, String)> {
        let mut c = self.current.lock().map_err(|_| anyhow!("SAS state poisoned"))?;
        let now = OffsetDateTime::now_utc();
        if now >= c.2 {
            *c = (
                self.key.container_sas_for(&self.container, now, self.lifetime)?,
                self.key.account_sas_for(self.scope, now, self.lifetime)?,
                now + self.lifetime / 2,
            );
        }
        Ok((c.0.clone(), c.1.clone()))
    }
}

/// What a self-signed account SAS grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountScope {
    /// Creating containers, nothing else (`ss=b`, `srt=c`, `sp=c`): the
    /// one thing a container SAS cannot do.
    CreateContainer,
    /// Azurite's: also every object of the account (`srt=sco`,
    /// `sp=rwdlac`), for the snapshot requests it refuses under a
    /// container SAS.
    Emulator,
}

impl AccountScope {
    /// (`sp`, `ss`, `srt`)
    fn fields(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::CreateContainer => ("c", "b", "c"),
            Self::Emulator => ("rwdlac", "b", "sco"),
        }
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
        self.container_sas_for(container, now, SAS_LIFETIME)
    }

    fn container_sas_for(&self, container: &str, now: OffsetDateTime, lifetime: time::Duration) -> Result<String> {
        let (st, se) = window(now, lifetime)?;
        let sp = "racwdl";
        let resource = format!("/blob/{}/{container}", self.account);
        let to_sign = [sp, &st, &se, &resource, "", "", "", SAS_VERSION, "c", "", "", "", "", "", "", ""].join("\n");
        let sig = self.sign(&to_sign)?;
        Ok(query(&[("sv", SAS_VERSION), ("sr", "c"), ("sp", sp), ("st", &st), ("se", &se), ("sig", &sig)]))
    }

    /// An account SAS for the blob service, granting `scope`.
    pub fn account_sas(&self, scope: AccountScope, now: OffsetDateTime) -> Result<String> {
        self.account_sas_for(scope, now, SAS_LIFETIME)
    }

    fn account_sas_for(&self, scope: AccountScope, now: OffsetDateTime, lifetime: time::Duration) -> Result<String> {
        let (st, se) = window(now, lifetime)?;
        let (sp, ss, srt) = scope.fields();
        let to_sign = format!("{}\n{sp}\n{ss}\n{srt}\n{st}\n{se}\n\n\n{SAS_VERSION}\n\n", self.account);
        let sig = self.sign(&to_sign)?;
        Ok(query(&[("sv", SAS_VERSION), ("ss", ss), ("srt", srt), ("sp", sp), ("st", &st), ("se", &se), ("sig", &sig)]))
    }
}

/// Valid from five minutes ago (clock skew) for `lifetime`.
fn window(now: OffsetDateTime, lifetime: time::Duration) -> Result<(String, String)> {
    let fmt = |t: OffsetDateTime| {
        t.replace_nanosecond(0).map_err(|e| anyhow!("{e}")).and_then(|t| t.format(&Rfc3339).map_err(|e| anyhow!("{e}")))
    };
    Ok((fmt(now - time::Duration::minutes(5))?, fmt(now + lifetime)?))
}

/// A user delegation key's life, and when a new one is asked for.
pub const DELEGATION_KEY_LIFETIME: time::Duration = time::Duration::hours(2);

/// A read-only container SAS (`sr=c`, `sp=r`) signed with a user delegation
/// key (Get User Delegation Key): how an Entra identity, which holds no
/// account key, lets Copy Blob read its source. Valid from five minutes ago
/// for an hour, never past the key. Signed by Microsoft's `azure_storage_sas`
/// crate; `agent/blob/tests/delegation_sas.rs` checks it against the Python
/// SDK's signature.
pub fn delegated_read_sas(
    account: &str,
    container: &str,
    key: &azure_storage_common::models::UserDelegationKey,
    now: OffsetDateTime,
) -> Result<String> {
    let expiry = key.signed_expiry.map_or(now, |e| e.min(now + time::Duration::hours(1)));
    let start = now - time::Duration::minutes(5);
    let start = key.signed_start.map_or(start, |s| s.max(start));
    let secs = |t: OffsetDateTime| t.replace_nanosecond(0).map_err(|e| anyhow!("{e}"));
    let sas = azure_storage_sas::SasBuilder::new(account, key, secs(expiry)?)
        .map_err(|e| anyhow!("the user delegation key is incomplete: {e}"))?
        .container(container)
        .read()
        .start(secs(start)?)
        .build();
    Ok(sas)
}

fn query(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

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
