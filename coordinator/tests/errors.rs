//! Runs every row of `docs/errors.md` against the real binaries: the exit
//! code, the first error line and what it names, at most four lines, no
//! secret, and nothing changed in the scratch folder. The table is the test
//! data, so the documentation cannot drift from the behaviour.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{agent_bin, make_vm, walk};

struct Row {
    n: u32,
    command: String,
    exit: i32,
    says: String,
}

fn rows() -> Vec<Row> {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/errors.md")).unwrap();
    doc.lines()
        .filter(|l| l.starts_with("| ") && l.contains('`'))
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            let n = cells.first()?.parse().ok()?;
            let tick = |s: &str| s.trim_matches('`').to_owned();
            Some(Row { n, command: tick(cells[1]), exit: cells[2].parse().ok()?, says: tick(cells[3]) })
        })
        .collect()
}

/// Every file under `dir` with its bytes' hash.
fn state(dir: &Path) -> BTreeMap<PathBuf, String> {
    walk(dir)
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let h = blake3::hash(&std::fs::read(&p).unwrap()).to_hex().to_string();
            (p, h)
        })
        .collect()
}

#[test]
fn every_row_of_the_bad_input_table_holds() {
    let rows = rows();
    assert!(rows.len() >= 40, "docs/errors.md has {} rows", rows.len());
    let t = tempfile::tempdir().unwrap();
    let fixtures = t.path().join("fixtures");
    let dir = t.path().join("scratch");
    std::fs::create_dir_all(&fixtures).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    let f = |name: &str, bytes: &[u8]| {
        let p = fixtures.join(name);
        std::fs::write(&p, bytes).unwrap();
        p.display().to_string()
    };
    let mut img = vec![0u8; 8 << 20];
    img[..4096].copy_from_slice(&common::noise(1, 4096));
    let vm = make_vm(&fixtures, "vm1", &[("os", 4 << 20, &[(0, 1 << 20)])]);
    let badvm = fixtures.join("badvm");
    std::fs::create_dir_all(&badvm).unwrap();
    std::fs::write(badvm.join("vm.toml"), "name = [unclosed").unwrap();
    let job = r#"{"version":1,"run_id":"r","disks":[{"name":"a","source":"/a","source_id":"v/a","destinations":["file:/b.vhd"]}]"#;
    let vars: Vec<(&str, String)> = vec![
        ("{dir}", dir.display().to_string()),
        ("{img}", f("disk.img", &img)),
        ("{odd}", f("odd.img", &[1u8; 1000])),
        ("{garbage}", f("garbage", &common::noise(2, 4096))),
        ("{badjob}", f("bad.json", format!("{job},\"colour\":\"red\"}}").as_bytes())),
        ("{job2}", f("v2.json", job.replace("\"version\":1", "\"version\":2").replace("]", "]}").as_bytes())),
        ("{token}", f("token", b"a-relay-token-of-enough-length-0123")),
        ("{short}", f("short", b"short")),
        ("{opentoken}", f("opentoken", b"a-relay-token-of-enough-length-0123")),
        ("{vm}", vm.display().to_string()),
        ("{badvm}", badvm.display().to_string()),
        ("{badtoml}", f("bad.toml", b"[storage]\ncolour = \"red\"\n")),
    ];
    // Token files are their owner's alone (the agent refuses others'), but
    // for `{opentoken}`.
    {
        use std::os::unix::fs::PermissionsExt;
        let set = |k: &str, m: u32| {
            let path = &vars.iter().find(|(n, _)| *n == k).unwrap().1;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(m)).unwrap();
        };
        set("{token}", 0o600);
        set("{short}", 0o600);
        set("{opentoken}", 0o644);
    }
    let before = state(&dir);
    let mut failures = Vec::new();
    for row in &rows {
        let mut cmdline = row.command.clone();
        for (k, v) in &vars {
            cmdline = cmdline.replace(k, v);
        }
        let mut words = cmdline.split_whitespace();
        let program = match words.next().unwrap() {
            "diskferry-agent" => agent_bin(),
            "diskferry" => PathBuf::from(env!("CARGO_BIN_EXE_diskferry")),
            other => panic!("row {}: unknown program {other}", row.n),
        };
        let out = Command::new(program)
            .args(words)
            .env("DISKFERRY_STATE_DIR", t.path().join("state"))
            .env_remove("DISKFERRY_CONFIG")
            .env_remove("DISKFERRY_RELAY_TOKEN")
            .env_remove("AZURE_STORAGE_CONNECTION_STRING")
            .env_remove("AZURE_STORAGE_KEY")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        let first = err.lines().next().unwrap_or_default();
        let lines = err.lines().filter(|l| !l.trim().is_empty()).count();
        let problems: Vec<String> = [
            (out.status.code() != Some(row.exit))
                .then(|| format!("exit {:?}, table says {}", out.status.code(), row.exit)),
            (!first.starts_with("error")).then(|| "first line does not start with `error`".to_owned()),
            (!first.contains(&row.says)).then(|| format!("first line does not say `{}`", row.says)),
            (lines > 4).then(|| format!("{lines} lines")),
            (err.contains("SECRET") || String::from_utf8_lossy(&out.stdout).contains("SECRET"))
                .then(|| "a secret was printed".to_owned()),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !problems.is_empty() {
            failures.push(format!(
                "row {} `{}`: {}\n    stderr: {}",
                row.n,
                row.command,
                problems.join("; "),
                err.trim()
            ));
        }
    }
    assert_eq!(state(&dir), before, "a bad command changed the scratch folder");
    assert!(failures.is_empty(), "docs/errors.md does not hold:\n{}", failures.join("\n"));
}
