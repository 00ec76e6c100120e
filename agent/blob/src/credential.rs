//! How requests authenticate: one selection for both binaries.
//!
//! Storage, in this order: a SAS in the URL's query; an account key
//! (`AZURE_STORAGE_CONNECTION_STRING` with `AccountKey=`, or
//! `AZURE_STORAGE_KEY`), from which short-lived SAS tokens are signed
//! ([`crate::sas`]); an Entra credential for https URLs ([`EntraKind`]).
//! The coordinator's ARM client takes its Entra credential from the same
//! [`entra`].

use std::fmt;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use azure_core::credentials::{Secret, TokenCredential};

use crate::address::BlobAddress;
use crate::sas::AccountKey;

/// Which Entra credential to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntraKind {
    /// The machine's managed identity (IMDS): the user-assigned one named by
    /// `AZURE_CLIENT_ID` when set (a worker VM's unit sets it), else the
    /// system-assigned one.
    ManagedIdentity,
    /// AKS workload identity (`AZURE_FEDERATED_TOKEN_FILE`, `AZURE_CLIENT_ID`, `AZURE_TENANT_ID`).
    WorkloadIdentity,
    /// `az login` on this machine.
    AzureCli,
    /// A service principal: `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`.
    ClientSecret,
}

impl EntraKind {
    /// What the environment asks for: workload identity where AKS set it
    /// up, the Azure CLI when `DISKFERRY_USE_AZURE_CLI` is set, else the
    /// managed identity (a worker VM's).
    pub fn from_env() -> Self {
        if std::env::var_os("AZURE_FEDERATED_TOKEN_FILE").is_some() {
            EntraKind::WorkloadIdentity
        } else if std::env::var_os("DISKFERRY_USE_AZURE_CLI").is_some() {
            EntraKind::AzureCli
        } else {
            EntraKind::ManagedIdentity
        }
    }
}

/// The Entra credential `kind` names.
pub fn entra(kind: EntraKind) -> Result<Arc<dyn TokenCredential>> {
    let env = |k: &str| std::env::var(k).with_context(|| format!("{kind:?} credential: {k} is not set"));
    Ok(match kind {
        EntraKind::ManagedIdentity => {
            let user_assigned_id = std::env::var("AZURE_CLIENT_ID")
                .ok()
                .filter(|c| !c.is_empty())
                .map(azure_identity::UserAssignedId::ClientId);
            azure_identity::ManagedIdentityCredential::new(Some(azure_identity::ManagedIdentityCredentialOptions {
                user_assigned_id,
                ..Default::default()
            }))?
        }
        EntraKind::WorkloadIdentity => azure_identity::WorkloadIdentityCredential::new(None)?,
        EntraKind::AzureCli => azure_identity::AzureCliCredential::new(None)?,
        EntraKind::ClientSecret => azure_identity::ClientSecretCredential::new(
            &env("AZURE_TENANT_ID")?,
            env("AZURE_CLIENT_ID")?,
            Secret::new(env("AZURE_CLIENT_SECRET")?),
            None,
        )?,
    })
}

/// A SAS for one blob (`sr=b`) authorises that blob only, and a
/// destination writes sidecar blobs beside it (journal, manifests, the
/// recovery point index): refuse it before the first write fails with 403.
fn check_sas_scope(addr: &BlobAddress, sas: &str) -> Result<()> {
    let scope = url::form_urlencoded::parse(sas.as_bytes()).find(|(k, _)| k == "sr").map(|(_, v)| v.into_owned());
    if let Some(sr) = scope.filter(|s| s == "b" || s == "bs" || s == "bv") {
        bail!(
            "the SAS in {addr} is for one blob (sr={sr}); diskferry also writes BLOB.journal, BLOB.points and \
             BLOB.gN.manifest beside it: use a container SAS (sr=c) with permissions racwdl"
        );
    }
    Ok(())
}

/// How storage requests authenticate.
#[derive(Clone)]
pub enum Credential {
    /// SAS query strings: `blob` for blob requests, `account` (an account
    /// SAS, only when signed with the account key) for the container's
    /// creation and for snapshot reads on Azurite.
    Sas { blob: String, account: Option<String> },
    /// An account key: SAS tokens signed here and renewed before they expire.
    Key(Arc<crate::sas::Signer>),
    /// An Entra token credential (https only).
    Token(Arc<dyn TokenCredential>),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Credential::Sas { .. } => "Credential::Sas(<redacted>)",
            Credential::Key(_) => "Credential::Key(<redacted>)",
            Credential::Token(_) => "Credential::Token",
        })
    }
}

impl Credential {
    /// The credential for `addr`, from the URL and the environment.
    pub fn for_address(addr: &BlobAddress) -> Result<Self> {
        if let Some(sas) = &addr.sas {
            check_sas_scope(addr, sas)?;
        }
        Self::for_reading(addr)
    }

    /// The credential for reading the one blob `addr` names (a source): a
    /// SAS for that blob alone (`sr=b`, what a managed snapshot's export
    /// URL carries) is enough.
    pub fn for_reading(addr: &BlobAddress) -> Result<Self> {
        if let Some(sas) = &addr.sas {
            Ok(Credential::Sas { blob: sas.clone(), account: None })
        } else if let Some(key) = AccountKey::from_env(&addr.account)? {
            Ok(Credential::Key(Arc::new(crate::sas::Signer::new(key, &addr.container, addr.is_emulator())?)))
        } else if addr.service.scheme() == "https" {
            Ok(Credential::Token(entra(EntraKind::from_env())?))
        } else {
            bail!(
                "no credentials for {addr}: put a SAS in the URL, or set AZURE_STORAGE_CONNECTION_STRING \
                 or AZURE_STORAGE_KEY (Entra credentials need https)"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_scoped_sas_is_refused_with_the_reason_and_no_secret() {
        let blob =
            BlobAddress::parse("https://acct.blob.core.windows.net/c/d.vhd?sv=2022-11-02&sr=b&sp=racwd&sig=SECRET")
                .unwrap();
        let e = format!("{:#}", Credential::for_address(&blob).unwrap_err());
        assert!(e.contains("sr=b") && e.contains("sr=c") && e.contains("racwdl"), "{e}");
        assert!(!e.contains("SECRET"), "{e}");
        let container =
            BlobAddress::parse("https://acct.blob.core.windows.net/c/d.vhd?sv=2022-11-02&sr=c&sp=racwdl&sig=S")
                .unwrap();
        assert!(matches!(Credential::for_address(&container), Ok(Credential::Sas { .. })));
    }
}
