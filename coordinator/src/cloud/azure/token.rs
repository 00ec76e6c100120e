//! ARM bearer tokens from `azure_identity` credentials. The SDK is async; the
//! coordinator's runs are threads, so each token request runs on a small
//! current-thread runtime. The credentials cache tokens themselves.

use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use azure_core::credentials::{Secret, TokenCredential};

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
    let env = |k: &str| std::env::var(k).with_context(|| format!("{kind:?} credential: {k} is not set"));
    let credential: Arc<dyn TokenCredential> = match kind {
        CredentialKind::EnvToken => {
            let t = env("DISKFERRY_ARM_TOKEN")?;
            return Ok(Box::new(StaticToken(t)));
        }
        CredentialKind::ManagedIdentity => diskferry_agent::pageblob::store::managed_identity()?,
        CredentialKind::WorkloadIdentity => azure_identity::WorkloadIdentityCredential::new(None)?,
        CredentialKind::AzureCli => azure_identity::AzureCliCredential::new(None)?,
        CredentialKind::ClientSecret => azure_identity::ClientSecretCredential::new(
            &env("AZURE_TENANT_ID")?,
            env("AZURE_CLIENT_ID")?,
            Secret::new(env("AZURE_CLIENT_SECRET")?),
            None,
        )?,
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    Ok(Box::new(IdentityToken { credential, kind, rt }))
}
