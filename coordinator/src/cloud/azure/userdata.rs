//! The worker's user data: `images/cloud-init.yaml` with the job spec, the
//! systemd unit and the agent fetch script filled in. Azure takes it base64
//! encoded, at most 64 KiB: this checks the encoded length, with headroom
//! (the decoded text is three quarters of it); it must hold no secret.

use anyhow::{bail, Result};
use diskferry_core::job::JobSpec;

const TEMPLATE: &str = include_str!("../../../../images/cloud-init.yaml");
const UNIT: &str = include_str!("../../../../images/diskferry-agent.service");
const FETCH: &str = include_str!("../../../../images/fetch-agent.sh");

/// Azure's limit on a VM's `userData`: "must be Base64 encoded ... can't
/// exceed 64 KB" (the encoded string is what is sent and counted).
pub const AZURE_USER_DATA: usize = 64 * 1024;
/// What diskferry sends at most: 4 KiB under Azure's limit, so that a
/// request's other bytes or a template a few lines longer never tip it over.
pub const MAX_USER_DATA_B64: usize = AZURE_USER_DATA - 4 * 1024;

/// Where the worker gets the agent binary.
#[derive(Debug, Clone)]
pub struct AgentSource {
    /// Blob URL, without SAS (fetched with the managed identity).
    pub url: String,
    /// Hex SHA-256 of the binary.
    pub sha256: String,
    /// Client id of the user-assigned identity the worker uses.
    pub identity_client_id: String,
}

/// The cloud-config text for a worker running `job`.
pub fn render(job: &JobSpec, agent: &AgentSource) -> Result<String> {
    check("agent URL", &agent.url, |c| c.is_ascii_graphic() && c != '\'' && c != '?' && c != '"')?;
    // Plain http only to loopback (an emulator on the coordinator's own
    // host, as in the tests; a worker VM never reaches it): a download
    // anyone on the way could change is refused.
    let loopback = agent
        .url
        .strip_prefix("http://")
        .and_then(|r| r.split(['/', ':']).next())
        .is_some_and(|h| h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()) || h == "localhost");
    if !agent.url.starts_with("https://") && !loopback {
        bail!("agent URL must be https:// (got {})", agent.url);
    }
    check("agent sha256", &agent.sha256, |c| c.is_ascii_hexdigit())?;
    if agent.sha256.len() != 64 {
        bail!("agent sha256 must be 64 hex digits");
    }
    check("identity client id", &agent.identity_client_id, |c| c.is_ascii_hexdigit() || c == '-')?;
    let fetch = FETCH
        .replace("@AGENT_URL@", &agent.url)
        .replace("@AGENT_SHA256@", &agent.sha256.to_ascii_lowercase())
        .replace("@IDENTITY_CLIENT_ID@", &agent.identity_client_id);
    let text = TEMPLATE
        // Compact: a job with range hints is mostly numbers, and user data
        // is capped.
        .replace("@JOB_B64@", &b64(serde_json::to_string(job)?.as_bytes()))
        .replace("@UNIT_B64@", &b64(UNIT.replace("@IDENTITY_CLIENT_ID@", &agent.identity_client_id).as_bytes()))
        .replace("@FETCH_B64@", &b64(fetch.as_bytes()));
    Ok(text)
}

/// The user data as the VM's `userData` property wants it: base64, at most
/// [`MAX_USER_DATA_B64`] characters.
pub fn render_base64(job: &JobSpec, agent: &AgentSource) -> Result<String> {
    let text = render(job, agent)?;
    let encoded = b64(text.as_bytes());
    if encoded.len() > MAX_USER_DATA_B64 {
        bail!(
            "worker user data is {} bytes base64 ({} decoded), over the {MAX_USER_DATA_B64} diskferry sends \
             (Azure takes {AZURE_USER_DATA} encoded): too many disks or range hints in one job",
            encoded.len(),
            text.len()
        );
    }
    Ok(encoded)
}

fn check(what: &str, v: &str, ok: impl Fn(char) -> bool) -> Result<()> {
    if v.is_empty() || !v.chars().all(ok) {
        bail!("{what} {v:?} has characters that cannot go into the worker's user data");
    }
    Ok(())
}

/// Standard base64 with padding.
pub fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let n = group.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= group.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use diskferry_core::job::JobDisk;

    fn job(disks: usize) -> JobSpec {
        JobSpec {
            version: 1,
            run_id: "20261122-101500.000-3f2a".into(),
            chunk_size: 1 << 20,
            concurrency: 16,
            keep: 7,
            threads: None,
            api_version: None,
            retry_for_secs: 120,
            create_container: false,
            status_interval_ms: 2000,
            status_blob: None,
            state_url: None,
            // The longest label a run records.
            consistency: Some("application".into()),
            fence: Some(u64::MAX),
            disks: (0..disks)
                .map(|i| JobDisk {
                    name: format!("data{i}"),
                    source: format!("lun:{i}"),
                    source_id: format!("web1/data{i}"),
                    destinations: vec![format!("pageblob:https://acct.blob.core.windows.net/dr/web1/data{i}.vhd")],
                    hint: None,
                    read_limit: None,
                })
                .collect(),
        }
    }

    fn agent() -> AgentSource {
        AgentSource {
            url: "https://acct.blob.core.windows.net/diskferry/agent/diskferry-agent".into(),
            sha256: "ab".repeat(32),
            identity_client_id: "6f1c2e3a-0000-4c1d-9e8f-123456789abc".into(),
        }
    }

    fn unb64(s: &str) -> Vec<u8> {
        let val = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            _ => 63,
        };
        let mut out = Vec::new();
        for q in s.as_bytes().chunks(4) {
            let n = q
                .iter()
                .take_while(|&&c| c != b'=')
                .enumerate()
                .fold(0u32, |n, (i, &c)| n | u32::from(val(c)) << (18 - 6 * i));
            let len = q.iter().filter(|&&c| c != b'=').count() - 1;
            out.extend((0..len).map(|i| (n >> (16 - 8 * i)) as u8));
        }
        out
    }

    #[test]
    fn base64_matches_the_standard() {
        for (raw, enc) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")] {
            assert_eq!(b64(raw.as_bytes()), enc);
            assert_eq!(unb64(enc), raw.as_bytes());
        }
    }

    #[test]
    fn user_data_is_cloud_config_carrying_the_job() {
        let j = job(3);
        let text = render(&j, &agent()).unwrap();
        assert!(text.starts_with("#cloud-config\n"));
        let docs = yaml_rust2::YamlLoader::load_from_str(&text).unwrap();
        let doc = &docs[0];
        let files = doc["write_files"].as_vec().unwrap();
        let file = |path: &str| {
            let f = files.iter().find(|f| f["path"].as_str() == Some(path)).unwrap();
            assert_eq!(f["encoding"].as_str(), Some("b64"));
            String::from_utf8(unb64(f["content"].as_str().unwrap())).unwrap()
        };
        assert_eq!(JobSpec::parse(&file("/etc/diskferry/job.json")).unwrap(), j);
        let unit = file("/etc/systemd/system/diskferry-agent.service");
        assert!(unit.contains("ExecStart=/usr/local/bin/diskferry-agent run"));
        assert!(unit.contains(&format!("Environment=AZURE_CLIENT_ID={}", agent().identity_client_id)), "{unit}");
        let fetch = file("/usr/local/lib/diskferry/fetch-agent.sh");
        assert!(fetch.contains(&agent().sha256) && fetch.contains(&agent().url) && !fetch.contains('@'));
        // The fetch script is valid shell.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f.sh"), &fetch).unwrap();
        assert!(std::process::Command::new("sh").arg("-n").arg(dir.path().join("f.sh")).status().unwrap().success());
        // One command: the agent starts only if its fetch succeeded.
        let runcmd = doc["runcmd"].as_vec().unwrap();
        assert_eq!(runcmd.len(), 1);
        let sh = runcmd[0].as_vec().unwrap()[2].as_str().unwrap();
        assert!(sh.starts_with("/usr/local/lib/diskferry/fetch-agent.sh && "), "{sh}");
        assert!(render_base64(&j, &agent()).unwrap().len() <= MAX_USER_DATA_B64);
    }

    #[test]
    fn the_worker_unit_is_valid_and_hardened() {
        // systemd's own judges: `verify` (every directive known and valid)
        // and `security` (the exposure score; the unit before hardening
        // scored 9.6 UNSAFE).
        let dir = tempfile::tempdir().unwrap();
        let unit = dir.path().join("diskferry-agent.service");
        let text = UNIT.replace("@IDENTITY_CLIENT_ID@", &agent().identity_client_id);
        // The binary is fetched at boot; verify wants an executable.
        std::fs::write(&unit, text.replace("/usr/local/bin/diskferry-agent", "/bin/true")).unwrap();
        let run = |args: &[&str]| std::process::Command::new("systemd-analyze").args(args).arg(&unit).output().unwrap();
        let v = run(&["verify"]);
        assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
        let s = run(&["security", "--offline=yes", "--threshold=30"]);
        let out = String::from_utf8_lossy(&s.stdout);
        assert!(s.status.success(), "exposure above 3.0: {}", out.lines().last().unwrap_or_default());
        assert!(out.contains("OK"), "{}", out.lines().last().unwrap_or_default());
    }

    #[test]
    fn hints_travel_compactly() {
        // The most hinted ranges a job carries (execute's budget: 1000, at
        // most 400 a disk) still fit in user data; pretty-printed JSON would not.
        let mut j = job(4);
        for d in &mut j.disks {
            let ranges = (0..250u64).map(|i| [i << 30, 65536]).collect();
            d.hint = Some(diskferry_core::job::RangeHint { base_generations: vec![7], disk_size: 1 << 40, ranges });
        }
        let encoded = render_base64(&j, &agent()).unwrap();
        assert!(encoded.len() <= MAX_USER_DATA_B64, "{}", encoded.len());
        assert!(b64(j.to_json().as_bytes()).len() > AZURE_USER_DATA, "the pretty form would not fit");
    }

    #[test]
    fn oversized_or_unsafe_inputs_are_refused() {
        // 60 KiB of base64 is about 100 disks' worth of job; a VM has at most 64 data disks.
        assert!(render_base64(&job(64), &agent()).is_ok());
        assert!(render_base64(&job(400), &agent()).unwrap_err().to_string().contains("Azure takes 65536 encoded"));
        // The limit counts the encoded string: a job whose text fits in
        // 64 KiB but whose base64 does not is refused.
        let n = (1..400).find(|&n| render(&job(n), &agent()).unwrap().len() > MAX_USER_DATA_B64 * 3 / 4).unwrap();
        let text = render(&job(n), &agent()).unwrap();
        assert!(text.len() < AZURE_USER_DATA && b64(text.as_bytes()).len() > MAX_USER_DATA_B64);
        assert!(render_base64(&job(n), &agent()).is_err(), "{n} disks: {} bytes of text", text.len());
        let mut a = agent();
        a.url.push_str("?sig=x");
        assert!(render(&job(1), &a).is_err(), "no SAS in the user data");
        let mut a = agent();
        a.url = "http://plain/agent".into();
        assert!(render(&job(1), &a).is_err());
        a.url = "http://127.0.0.2.example.com/agent".into();
        assert!(render(&job(1), &a).is_err(), "a name that starts like a loopback address is not one");
        a.url = "http://127.0.0.1:10000/devstoreaccount1/c/agent".into();
        assert!(render(&job(1), &a).is_ok(), "an emulator on loopback");
        let mut a = agent();
        a.identity_client_id = "x'; rm -rf /".into();
        assert!(render(&job(1), &a).is_err());
    }
}
