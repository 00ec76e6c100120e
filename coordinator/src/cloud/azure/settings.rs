//! The `[azure]` section of the coordinator's config: where runs put their
//! resources, what the worker VM looks like, how the coordinator gets ARM
//! tokens. No secret lives here: credentials come from the environment or a
//! managed identity.
//!
//! ```toml
//! provider = "azure"
//! [azure]
//! subscription = "00000000-0000-0000-0000-000000000000"
//! resource_group = "diskferry-work"      # snapshots and workers go here
//! vm_sizes = ["Standard_D4s_v5", "Standard_D8s_v5", "Standard_D16s_v5"] # the first that takes the disks
//! temp_disk_sku = "Premium_LRS"          # the worker's copies of the snapshots
//! subnet_id = "/subscriptions/.../virtualNetworks/vnet/subnets/workers"
//! image = "Canonical:ubuntu-24_04-lts:server:latest"
//! identity_id = "/subscriptions/.../userAssignedIdentities/diskferry-worker"
//! identity_client_id = "6f1c2e3a-..."
//! ssh_public_key = "ssh-ed25519 AAAA... ops@example"
//! agent_url = "https://acct.blob.core.windows.net/diskferry/diskferry-agent"
//! agent_sha256 = "..."                   # sha256sum of that binary
//! status_container = "https://acct.blob.core.windows.net/diskferry-status"
//! credential = "managed-identity"        # or workload-identity, azure-cli, client-secret
//! ```

use anyhow::{bail, Result};

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureSettings {
    pub subscription: String,
    /// The resource group a run's snapshots and worker go to (the source
    /// VM's own group is only read).
    pub resource_group: String,
    /// ARM endpoint [default: https://management.azure.com].
    #[serde(default = "default_endpoint")]
    pub arm_endpoint: String,
    /// How the coordinator gets ARM tokens.
    #[serde(default)]
    pub credential: CredentialKind,
    /// The worker's size: the first of these, looked up in the region's
    /// resource SKUs, that takes every source disk as a data disk (the OS
    /// disk too) and premium disks when `temp_disk_sku` is one.
    #[serde(default = "default_vm_sizes")]
    pub vm_sizes: Vec<String>,
    /// One size instead of `vm_sizes` (the older setting; not both).
    #[serde(default)]
    pub vm_size: Option<String>,
    /// Storage type of the worker's temporary disks (copies of the
    /// snapshots, created with it): it sets how fast the worker reads.
    /// Azure's own default for such a disk is `Standard_LRS` (HDD).
    #[serde(default = "default_temp_disk_sku")]
    pub temp_disk_sku: String,
    /// How long a snapshot may stay `Pending` (not yet usable: Premium SSD
    /// v2 and Ultra disks' snapshots copy in the background) before the run
    /// gives up.
    #[serde(default = "default_snapshot_ready")]
    pub snapshot_ready_secs: u64,
    /// Instant access asked for a Premium SSD v2 or Ultra disk's snapshot
    /// (`instantAccessDurationMinutes`), so the worker's disks can be made
    /// from it at once. Billed while it lasts.
    #[serde(default = "default_instant_access")]
    pub instant_access_minutes: u32,
    /// The least time between two crash-consistent VM restore points of one
    /// VM: Azure refuses them more often ("1 hour" for crash-consistent,
    /// "3 hours" for application-consistent: the restore points support
    /// matrix). A run sooner than this takes per-disk snapshots instead and
    /// says so.
    #[serde(default = "default_crash_interval")]
    pub restore_point_crash_secs: u64,
    /// The same for application-consistent restore points.
    #[serde(default = "default_application_interval")]
    pub restore_point_application_secs: u64,
    /// The changed ranges of a snapshot are asked for this many bytes of
    /// it at a time (`x-ms-range`): one Get Page Ranges over a large,
    /// fragmented snapshot can time out on the service's side.
    #[serde(default = "default_diff_segment")]
    pub diff_segment_bytes: u64,
    /// The subnet the worker's NIC joins (no public IP; it needs outbound
    /// access to storage: NAT gateway or private endpoint).
    pub subnet_id: String,
    /// `publisher:offer:sku:version` of the worker's Linux image.
    #[serde(default = "default_image")]
    pub image: String,
    /// The user-assigned identity the worker runs as: it may write the
    /// destination storage and the status container, nothing else.
    pub identity_id: String,
    pub identity_client_id: String,
    #[serde(default = "default_admin")]
    pub admin_user: String,
    /// The worker accepts SSH keys only (no password); it has no public IP.
    pub ssh_public_key: String,
    /// The agent binary the worker downloads (https, no SAS) and its SHA-256.
    pub agent_url: String,
    pub agent_sha256: String,
    /// Block blob container the worker writes its status document to.
    pub status_container: String,
    /// Create the status container when it is missing (needs a role that
    /// may create containers; otherwise create it once by hand).
    #[serde(default)]
    pub create_status_container: bool,
    /// Storage service version for the status blob (Azurite wants an older one).
    #[serde(default)]
    pub storage_api_version: Option<String>,
    /// How often the worker's status blob is read while it runs.
    #[serde(default = "default_watch_poll")]
    pub watch_poll_ms: u64,
    /// How often the worker VM itself is looked at (is it still there?).
    /// Single-VM reads are throttled at 12 a minute per VM.
    #[serde(default = "default_vm_check")]
    pub vm_check_secs: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialKind {
    /// The VM's (or Arc machine's) managed identity: IMDS.
    #[default]
    ManagedIdentity,
    /// AKS workload identity (AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID, AZURE_TENANT_ID).
    WorkloadIdentity,
    /// `az login` on this machine.
    AzureCli,
    /// A service principal: AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET.
    ClientSecret,
    /// A bearer token obtained out of band, in DISKFERRY_ARM_TOKEN (tests, break-glass).
    EnvToken,
}

fn default_endpoint() -> String {
    "https://management.azure.com".into()
}
fn default_vm_sizes() -> Vec<String> {
    ["Standard_D4s_v5", "Standard_D8s_v5", "Standard_D16s_v5", "Standard_D32s_v5"].map(String::from).to_vec()
}
fn default_temp_disk_sku() -> String {
    "Premium_LRS".into()
}
fn default_crash_interval() -> u64 {
    3600
}

fn default_application_interval() -> u64 {
    3 * 3600
}

fn default_snapshot_ready() -> u64 {
    3600
}
fn default_instant_access() -> u32 {
    60
}
fn default_diff_segment() -> u64 {
    32 << 30
}

/// Storage types a worker's temporary disk may have (the spec's
/// `StorageAccountTypes`, less Ultra: it cannot be made from a snapshot of
/// another type).
const TEMP_DISK_SKUS: [&str; 6] =
    ["Standard_LRS", "StandardSSD_LRS", "StandardSSD_ZRS", "Premium_LRS", "Premium_ZRS", "PremiumV2_LRS"];
fn default_image() -> String {
    "Canonical:ubuntu-24_04-lts:server:latest".into()
}
fn default_watch_poll() -> u64 {
    2000
}
fn default_vm_check() -> u64 {
    30
}
fn default_admin() -> String {
    "diskferry".into()
}

impl AzureSettings {
    /// The worker sizes to choose from, in order of preference.
    pub fn sizes(&self) -> Vec<String> {
        match &self.vm_size {
            Some(one) => vec![one.clone()],
            None => self.vm_sizes.clone(),
        }
    }

    /// Checks serde cannot make: shapes that would fail only at the first run.
    pub fn validate(&self) -> Result<()> {
        if self.vm_size.is_some() && self.vm_sizes != default_vm_sizes() {
            bail!("azure.vm_size and azure.vm_sizes: set one of them");
        }
        if self.sizes().is_empty() || self.sizes().iter().any(|s| !super::names::is_plain(s)) {
            bail!("azure.vm_sizes must name at least one size, each a plain name (Standard_D4s_v5)");
        }
        if !TEMP_DISK_SKUS.contains(&self.temp_disk_sku.as_str()) {
            bail!("azure.temp_disk_sku {:?} is not one of {}", self.temp_disk_sku, TEMP_DISK_SKUS.join(", "));
        }
        if self.diff_segment_bytes < 1 << 20 || !self.diff_segment_bytes.is_multiple_of(512) {
            bail!("azure.diff_segment_bytes must be a multiple of 512 of at least 1 MiB");
        }
        if self.instant_access_minutes == 0 {
            bail!("azure.instant_access_minutes must be at least 1 (the spec's minimum)");
        }
        if !super::names::is_plain(&self.subscription) || !super::names::is_plain(&self.resource_group) {
            bail!("azure.subscription and azure.resource_group must be plain names");
        }
        if self.image.split(':').count() != 4 {
            bail!("azure.image must be publisher:offer:sku:version (got {:?})", self.image);
        }
        for (k, v) in [("subnet_id", &self.subnet_id), ("identity_id", &self.identity_id)] {
            if !v.starts_with("/subscriptions/") {
                bail!("azure.{k} must be a resource id (/subscriptions/...)");
            }
        }
        for (k, v) in [("agent_url", &self.agent_url), ("status_container", &self.status_container)] {
            if v.contains('?') {
                bail!("azure.{k} must not carry a query (no SAS: the worker uses its managed identity)");
            }
        }
        if !self.arm_endpoint.starts_with("https://") && !crate::destination::is_loopback_url(&self.arm_endpoint) {
            bail!("azure.arm_endpoint must be https:// (plain http only to a loopback test endpoint)");
        }
        Ok(())
    }
}
