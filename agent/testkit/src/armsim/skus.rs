//! The simulator's Resource SKUs (`ResourceSkus_List`, Skus/stable/2021-07-01):
//! the entries of the spec's own example
//! `examples/skus/ListAvailableResourceSkusForARegion.json` (vendored under
//! `agent/testkit/specs/examples/`, see SOURCES.md), and sizes the tests use
//! made in that entry's shape. The example lists no disk throughput; the
//! added sizes carry `UncachedDiskBytesPerSecond` and `UncachedDiskIOPS`,
//! capability names the service lists for current sizes. The Dsv5 and Dv5
//! rows carry the figures of Microsoft's Dsv5 size table (data disks,
//! uncached IOPS and MBps); the Ddsv6 and Dpsv5 rows are test values.

use serde_json::{json, Value};

const EXAMPLE: &str = include_str!(
    "../../specs/examples/compute/resource-manager/Microsoft.Compute/Skus/stable/2021-07-01/examples/skus/ListAvailableResourceSkusForARegion.json"
);

/// (name, family, data disks, uncached bytes/s, uncached IOPS, premium, architecture)
const SIZES: [(&str, &str, u32, u64, u64, bool, &str); 8] = [
    ("Standard_D2s_v5", "standardDSv5Family", 4, 85_000_000, 3_750, true, "x64"),
    ("Standard_D4s_v5", "standardDSv5Family", 8, 145_000_000, 6_400, true, "x64"),
    ("Standard_D8s_v5", "standardDSv5Family", 16, 290_000_000, 12_800, true, "x64"),
    ("Standard_D16s_v5", "standardDSv5Family", 32, 600_000_000, 25_600, true, "x64"),
    ("Standard_D32s_v5", "standardDSv5Family", 32, 865_000_000, 51_200, true, "x64"),
    ("Standard_D4_v5", "standardDv5Family", 8, 145_000_000, 6_400, false, "x64"),
    ("Standard_D4ds_v6", "standardDdsv6Family", 8, 152_000_000, 6_400, true, "x64"),
    ("Standard_D4ps_v5", "standardDPSv5Family", 8, 152_000_000, 6_400, true, "Arm64"),
];

/// Every `virtualMachines` SKU the simulator offers in `location`;
/// `restricted` names sizes the subscription may not use there.
pub fn vm_skus(location: &str, restricted: &[String]) -> Vec<Value> {
    let example: Value = serde_json::from_str(EXAMPLE).expect("the vendored example parses");
    let entries = example["responses"]["200"]["body"]["value"].as_array().cloned().unwrap_or_default();
    let template = entries.first().cloned().unwrap_or_default();
    let mut out: Vec<Value> = entries;
    for (name, family, disks, bps, iops, premium, arch) in SIZES {
        let mut e = template.clone();
        e["name"] = name.into();
        e["size"] = name.trim_start_matches("Standard_").into();
        e["family"] = family.into();
        let caps = e["capabilities"].as_array_mut().expect("the example lists capabilities");
        let mut set = |k: &str, v: String| match caps.iter_mut().find(|c| c["name"] == k) {
            Some(c) => c["value"] = v.into(),
            None => caps.push(json!({"name": k, "value": v})),
        };
        set("MaxDataDiskCount", disks.to_string());
        set("PremiumIO", if premium { "True" } else { "False" }.to_owned());
        set("HyperVGenerations", "V1,V2".to_owned());
        set("UncachedDiskBytesPerSecond", bps.to_string());
        set("UncachedDiskIOPS", iops.to_string());
        set("CpuArchitectureType", arch.to_owned());
        // The size's number is its vCPUs (D4s_v5: 4), as Microsoft's tables say.
        let vcpus: String = name.trim_start_matches("Standard_D").chars().take_while(char::is_ascii_digit).collect();
        set("vCPUs", vcpus);
        out.push(e);
    }
    for e in &mut out {
        e["locations"] = json!([location]);
        if let Some(info) = e["locationInfo"].as_array_mut() {
            for i in info {
                i["location"] = location.into();
            }
        }
        if restricted.iter().any(|r| e["name"] == r.as_str()) {
            e["restrictions"] = json!([{"type": "Location", "values": [location],
                "restrictionInfo": {"locations": [location]}, "reasonCode": "NotAvailableForSubscription"}]);
        } else {
            e["restrictions"] = json!([]);
        }
    }
    out
}

/// The quota families of the sizes the simulator offers.
pub fn families() -> Vec<String> {
    let mut f: Vec<String> = SIZES.iter().map(|s| s.1.to_owned()).collect();
    f.dedup();
    f
}

/// A capability of a SKU entry, as a string.
pub fn capability<'a>(sku: &'a Value, name: &str) -> Option<&'a str> {
    sku["capabilities"].as_array()?.iter().find(|c| c["name"] == name)?["value"].as_str()
}
