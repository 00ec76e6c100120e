//! ARM bearer tokens from `azure_identity` credentials. The SDK is async; the
//! coordinator's runs are threads, so each token request runs on a small
//! current-thread runtime. The credentials cache tokens themselves.

use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use azure_core::credentials::TokenCredential;

use super::arm::{StaticToken, TokenSource};
use super::settings::CredentialKind;

/// ARM's scope.
const SCOPE: &str = "https://management.azure.com/.default";

/// Tokens from an Entra credential.
pub struct IdentityToken {
    credential: Arc<dyn TokenCredential>,
    kind: CredentialKind,
    /// Every ARM request asks for a token: one runtime serves them all.
    rt: tokio::runtime::Runtime,
}

impl std::fmt::Debug for IdentityToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdentityToken({:?})", self.kind)
    }
}

impl TokenSource for IdentityToken {
    fn token(&self) -> Result<String> {
        let t = self
            .rt
            .block_on(self.credential.get_token(&[SCOPE], None))
            .map_err(|e| anyhow!("{:?} credential: {e}", self.kind))?;
        Ok(t.token.secret().to_owned())
    }
}

/// The token source `kind` names.
pub fn source(kind: CredentialKind) -> Result<Box<dyn TokenSource>> {
    use diskferry_blob::credential::{entra, EntraKind};
    let credential: Arc<dyn TokenCredential> = match kind {
        CredentialKind::EnvToken => {
            let t = std::env::var("DISKFERRY_ARM_TOKEN")
                .with_context(|| format!("{kind:?} credential: DISKFERRY_ARM_TOKEN is not set"))?;
            return Ok(Box::new(StaticToken(t)));
        }
        CredentialKind::ManagedIdentity => entra(EntraKind::ManagedIdentity)?,
        CredentialKind::WorkloadIdentity => entra(EntraKind::WorkloadIdentity)?,
        CredentialKind::AzureCli => entra(EntraKind::AzureCli)?,
        CredentialKind::ClientSecret => entra(EntraKind::ClientSecret)?,
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    Ok(Box::new(IdentityToken { credential, kind, rt }))
}
