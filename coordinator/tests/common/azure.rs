//! The `azure` provider's test fixture: a coordinator configured for the
//! in-process ARM simulator, a source VM of two disk files, Azurite as the
//! destination, and what the tests look at afterwards.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::armsim::{self, ArmSim, FailRule};
use super::{agent_bin, azurite, identical, make_disk, Coord};
use serde_json::Value;

pub const MIB: u64 = 1 << 20;
pub const WORK: &str = "work";

pub struct Fixture {
    pub coord: Coord,
    pub sim: Arc<ArmSim>,
    pub os: PathBuf,
    pub data: PathBuf,
    pub dest: String,
}

/// A subnet as Subnets - Get answers (virtualNetwork.json; the fields of
/// SubnetGetWithSharingScope.json), with a NAT gateway or without one.
pub fn subnet(id: &str, nat: bool) -> Value {
    let mut props = serde_json::json!({"addressPrefix": "10.0.0.0/24", "defaultOutboundAccess": false,
                                       "provisioningState": "Succeeded"});
    if nat {
        props["natGateway"] = serde_json::json!({"id": format!("/subscriptions/{}/resourceGroups/net/providers/Microsoft.Network/natGateways/nat1", armsim::SUB)});
    }
    serde_json::json!({"name": id.rsplit('/').next().unwrap(), "id": id,
                       "type": "Microsoft.Network/virtualNetworks/subnets", "properties": props})
}

/// A stand-in agent binary in an Azurite container of its own: its URL
/// (no SAS: the coordinator's credentials read it) and its SHA-256.
pub fn upload_agent(test: &str) -> (String, String) {
    use sha2::{Digest, Sha256};
    let container = azurite::container(&format!("{test}-agent"));
    let bytes = format!("#!/bin/sh\necho diskferry-agent for {test}\n").into_bytes();
    let key = diskferry_blob::sas::AccountKey::new(azurite::ACCOUNT, azurite::KEY);
    let signer = diskferry_blob::sas::Signer::new(key, &container, true).unwrap();
    let url =
        azurite::url(azurite::endpoint(), &container, "diskferry-agent").trim_start_matches("pageblob:").to_owned();
    let addr = diskferry_blob::address::BlobAddress::parse(&url).unwrap();
    let store = diskferry_blob::azure::AzureStore::with_credential(
        addr,
        diskferry_blob::credential::Credential::Key(Arc::new(signer)),
        None,
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    use diskferry_blob::PageStore;
    rt.block_on(store.create_container()).unwrap();
    rt.block_on(store.put_block_blob("diskferry-agent", bytes.clone().into())).unwrap();
    let sum: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    (url, sum)
}

impl Fixture {
    pub fn new(test: &str) -> Self {
        let mut coord = Coord::new(true);
        let src = coord.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        let (os, data) = (src.join("os.img"), src.join("data0.img"));
        make_disk(&os, 40 * MIB, &[(0, 3 * MIB), (17 * MIB, 5 * MIB)], 11);
        make_disk(&data, 24 * MIB, &[(MIB, 2 * MIB), (20 * MIB, 4 * MIB)], 12);
        let env = vec![("AZURE_STORAGE_CONNECTION_STRING".to_owned(), azurite::connection_string())];
        let sim = ArmSim::start(&coord.path().join("sim"), &agent_bin(), env);
        sim.add_vm("prod", "web1", "westeurope", &os, &[(0, &data)]);
        let endpoint = coord.endpoint.clone().unwrap();
        let status = azurite::container(&format!("{test}-status"));
        // What preflight reads before a first run: the agent blob (a real
        // one in Azurite, and its SHA-256), the subnet with a NAT gateway.
        let (agent_url, agent_sha) = upload_agent(test);
        sim.with(|s| {
            let id = format!(
                "/subscriptions/{}/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/v/subnets/workers",
                armsim::SUB
            );
            s.resources.insert(id.to_ascii_lowercase(), subnet(&id, true));
        });
        std::fs::write(
            &coord.config,
            format!(
                r#"provider = "azure"
[storage]
create_container = true
retry_for_secs = 3
concurrency = 8
[run]
deadline_secs = 120
status_interval_ms = 100
read_limit_mib_s = 512
[azure]
subscription = "{sub}"
resource_group = "{WORK}"
arm_endpoint = "{base}"
credential = "env-token"
subnet_id = "/subscriptions/{sub}/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/v/subnets/workers"
identity_id = "/subscriptions/{sub}/resourceGroups/id/providers/Microsoft.ManagedIdentity/userAssignedIdentities/df-worker"
identity_client_id = "6f1c2e3a-0000-4c1d-9e8f-123456789abc"
ssh_public_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample ops@example"
agent_url = "{agent_url}"
agent_sha256 = "{agent_sha}"
status_container = "{endpoint}/{account}/{status}"
create_status_container = true
watch_poll_ms = 100
vm_check_secs = 1
"#,
                sub = armsim::SUB,
                base = sim.base,
                account = azurite::ACCOUNT,
            ),
        )
        .unwrap();
        let dest = coord.container(test);
        coord.env.push(("DISKFERRY_ARM_TOKEN".into(), armsim::TOKEN.into()));
        Self { coord, sim, os, data, dest }
    }

    /// Set `key = value` (TOML) in the config's `[azure]` section, the last one.
    pub fn set(&self, key: &str, value: &str) {
        let config = std::fs::read_to_string(&self.coord.config).unwrap();
        let mut lines: Vec<String> =
            config.lines().filter(|l| !l.starts_with(&format!("{key} ="))).map(str::to_owned).collect();
        lines.push(format!("{key} = {value}"));
        std::fs::write(&self.coord.config, lines.join("\n") + "\n").unwrap();
    }

    /// Change a resource of the simulator in place.
    pub fn edit(&self, id: &str, f: impl FnOnce(&mut Value)) {
        self.sim.with(|s| f(s.resources.get_mut(&id.to_ascii_lowercase()).unwrap_or_else(|| panic!("no {id}"))));
    }

    /// The bodies the provider PUT to paths containing `part`.
    pub fn bodies(&self, part: &str) -> Vec<Value> {
        self.sim.with(|s| s.bodies.iter().filter(|(p, _)| p.contains(part)).map(|(_, b)| b.clone()).collect())
    }

    /// A storage account in `northeurope` to import into; its id.
    pub fn storage_account(&self) -> &'static str {
        let account =
            "/subscriptions/s1/resourceGroups/dr/providers/Microsoft.Storage/storageAccounts/devstoreaccount1";
        self.sim.with(|s| {
            s.resources.insert(
                account.to_ascii_lowercase(),
                serde_json::json!({"id": account, "name": "devstoreaccount1", "type": "Microsoft.Storage/storageAccounts", "location": "northeurope"}),
            )
        });
        account
    }

    /// `migrate` of prod/web1 into `azure:dr` through `account`, with a VM
    /// `web1-dr` made of the imported disks.
    pub fn migrate(&self, account: &str) -> std::process::Output {
        let subnet = "/subscriptions/s1/resourceGroups/dr/providers/Microsoft.Network/virtualNetworks/v/subnets/apps";
        self.cmd(&[
            "migrate",
            "--vm",
            "prod/web1",
            "--to",
            &self.dest,
            "--import-to",
            "azure:dr",
            "--storage-account",
            account,
            "--create-vm",
            "web1-dr",
            "--subnet",
            subnet,
            "--consistency",
            "per-disk",
            "--json",
        ])
    }

    pub fn cmd(&self, args: &[&str]) -> std::process::Output {
        self.coord.run(args)
    }

    pub fn json(&self, args: &[&str]) -> Value {
        self.coord.json(args)
    }

    /// The next request matching (method, path) fails with `code`.
    pub fn fail_next(&self, method: &'static str, path: &str, code: &'static str, sync_status: Option<u16>) {
        self.sim.with(|s| s.fail = vec![FailRule { method, path: path.into(), code, sync_status }]);
    }

    /// A replica of prod/web1; per-disk snapshots unless `extra` names a
    /// `--consistency` (restore points have tests of their own).
    pub fn create(&self, name: &str, extra: &[&str]) {
        let mut args = vec!["replica", "create", name, "--vm", "prod/web1", "--to", &self.dest];
        if !extra.contains(&"--consistency") {
            args.extend_from_slice(&["--consistency", "per-disk"]);
        }
        args.extend_from_slice(extra);
        let out = self.cmd(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    /// The run's leftovers in the work group: everything named df-.
    pub fn leftovers(&self) -> Vec<String> {
        self.sim.names(WORK, "df-")
    }

    pub fn snapshots(&self) -> Vec<Value> {
        let ids: Vec<String> = self.leftovers();
        ids.iter()
            .filter_map(|n| n.strip_prefix("Microsoft.Compute/snapshots/"))
            .map(|n| {
                self.sim
                    .resource(&format!("{}/providers/Microsoft.Compute/snapshots/{n}", armsim::rg_path(WORK)))
                    .unwrap()
            })
            .collect()
    }

    pub fn import_and_compare(&self, replica: &str) {
        let out = self.coord.path().join(format!("import-{}", rand_suffix()));
        std::fs::create_dir_all(&out).unwrap();
        let o = self.cmd(&["import", replica, "--to", out.to_str().unwrap()]);
        assert!(o.status.success(), "import: {}", String::from_utf8_lossy(&o.stderr));
        assert!(identical(&self.os, &out.join("os.vhd")), "the os disk differs after import");
        assert!(identical(&self.data, &out.join("lun0.vhd")), "the data disk differs after import");
        std::fs::remove_dir_all(&out).unwrap();
    }
}

pub fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

pub fn only_retained_snapshots(f: &Fixture) {
    for s in f.snapshots() {
        assert_eq!(s["tags"]["diskferry-retained"], "true", "{s}");
        assert!(s["tags"].get("diskferry-expires").is_none(), "a retained snapshot has no expiry: {s}");
    }
    let others: Vec<String> =
        f.leftovers().into_iter().filter(|n| !n.starts_with("Microsoft.Compute/snapshots/")).collect();
    assert!(others.is_empty(), "left behind: {others:?}");
    assert_eq!(f.sim.running_workers(), 0, "an agent still runs");
}

/// GET a blob from Azurite under a SAS the test signs.
pub fn fetch(url: &str) -> Vec<u8> {
    let container = url.split('/').nth(4).unwrap();
    let key = diskferry_blob::sas::AccountKey::new(azurite::ACCOUNT, azurite::KEY);
    let sas = key.container_sas(container, time::OffsetDateTime::now_utc()).unwrap();
    let r = reqwest::blocking::get(format!("{url}?{sas}")).unwrap();
    assert!(r.status().is_success(), "GET {url}: {}", r.status());
    r.bytes().unwrap().to_vec()
}

/// Neither the ARM token nor a SAS signature reaches the output.
pub fn no_secret(out: &std::process::Output) {
    for text in [String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)] {
        assert!(!text.contains("SECRET") && !text.contains("sig="), "a secret leaked: {text}");
    }
}

/// The job inside a worker's cloud-config.
pub fn job_of(cloud_config: &str) -> Value {
    let docs = yaml_rust2::YamlLoader::load_from_str(cloud_config).unwrap();
    let files = docs[0]["write_files"].as_vec().unwrap();
    let f = files.iter().find(|f| f["path"].as_str() == Some("/etc/diskferry/job.json")).unwrap();
    serde_json::from_slice(&armsim::unb64(f["content"].as_str().unwrap()).unwrap()).unwrap()
}
