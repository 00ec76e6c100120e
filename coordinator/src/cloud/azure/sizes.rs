//! Choosing the worker's size: every source disk (the OS disk too) becomes
//! one of its data disks, and its uncached disk throughput caps the whole
//! read. The facts come from Resource SKUs (`GET /subscriptions/S/providers/
//! Microsoft.Compute/skus?api-version=2021-07-01&$filter=location eq 'L'`,
//! Skus/stable/2021-07-01/skus.json `ResourceSkus_List`): each
//! `virtualMachines` entry has `capabilities` (`MaxDataDiskCount`,
//! `UncachedDiskBytesPerSecond`, `UncachedDiskIOPS`, `PremiumIO`,
//! `CpuArchitectureType`, values as strings) and `restrictions` (a size the
//! subscription may not use in that region, or only in some zones).

use anyhow::{bail, Result};
use serde_json::Value;

/// The api-version of Resource SKUs.
pub const SKUS_API: &str = "2021-07-01";

/// What one VM size allows, as Resource SKUs says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeFacts {
    pub name: String,
    pub max_data_disks: u32,
    /// Uncached disk throughput, bytes a second, when listed.
    pub uncached_bytes_per_sec: Option<u64>,
    pub uncached_iops: Option<u64>,
    /// Takes premium SSDs (`PremiumIO`).
    pub premium_io: bool,
    /// `x64` or `Arm64` (absent: x64).
    pub architecture: String,
    /// Why the subscription cannot use it here, if it cannot
    /// (`NotAvailableForSubscription`, ...).
    pub restricted: Option<String>,
    /// Its quota family (`standardDSv5Family`): Compute usages count
    /// vCPUs by it.
    pub family: Option<String>,
    pub vcpus: Option<u64>,
}

impl SizeFacts {
    /// One line for a run's record: what the worker can do.
    pub fn describe(&self) -> String {
        let mut s = format!("{}: {} data disks", self.name, self.max_data_disks);
        if let Some(b) = self.uncached_bytes_per_sec {
            s.push_str(&format!(", {} MB/s", b / 1_000_000));
        }
        if let Some(i) = self.uncached_iops {
            s.push_str(&format!(", {i} IOPS"));
        }
        s.push_str(" uncached");
        s
    }
}

/// The `virtualMachines` sizes of one page of Resource SKUs in `location`.
pub fn parse(page: &Value, location: &str) -> Vec<SizeFacts> {
    let mut out = Vec::new();
    for sku in page["value"].as_array().into_iter().flatten() {
        if sku["resourceType"] != "virtualMachines" {
            continue;
        }
        let here = sku["locations"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|l| l.as_str().is_some_and(|l| l.eq_ignore_ascii_case(location)));
        if !here {
            continue;
        }
        let Some(name) = sku["name"].as_str() else { continue };
        let cap = |k: &str| -> Option<&str> {
            sku["capabilities"].as_array()?.iter().find(|c| c["name"] == k).and_then(|c| c["value"].as_str())
        };
        let num = |k: &str| cap(k).and_then(|v| v.trim().parse::<u64>().ok());
        // A restriction of type Location names this region: the size is
        // not offered to the subscription here at all. (Zone restrictions
        // leave the size usable without a zone.)
        let restricted = sku["restrictions"].as_array().into_iter().flatten().find_map(|r| {
            let names_here = r["values"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|v| v.as_str().is_some_and(|v| v.eq_ignore_ascii_case(location)));
            (r["type"] == "Location" && names_here).then(|| r["reasonCode"].as_str().unwrap_or("restricted").to_owned())
        });
        out.push(SizeFacts {
            name: name.to_owned(),
            max_data_disks: num("MaxDataDiskCount").unwrap_or(0) as u32,
            uncached_bytes_per_sec: num("UncachedDiskBytesPerSecond"),
            uncached_iops: num("UncachedDiskIOPS"),
            premium_io: cap("PremiumIO").is_some_and(|v| v.eq_ignore_ascii_case("true")),
            architecture: cap("CpuArchitectureType").unwrap_or("x64").to_owned(),
            restricted,
            family: sku["family"].as_str().map(str::to_owned),
            vcpus: num("vCPUs"),
        });
    }
    out
}

/// The first of `wanted` that takes `disks` data disks (premium ones when
/// `premium`), runs the x64 worker image, and is offered here; or why none is.
pub fn pick<'a>(wanted: &[String], known: &'a [SizeFacts], disks: usize, premium: bool) -> Result<&'a SizeFacts> {
    let mut why = Vec::new();
    for w in wanted {
        let Some(f) = known.iter().find(|f| f.name.eq_ignore_ascii_case(w)) else {
            why.push(format!("{w} is not offered in this region"));
            continue;
        };
        if let Some(r) = &f.restricted {
            why.push(format!("{w} is restricted here ({r})"));
        } else if (f.max_data_disks as usize) < disks {
            why.push(format!("{w} takes {} data disks", f.max_data_disks));
        } else if premium && !f.premium_io {
            why.push(format!("{w} takes no premium disks"));
        } else if !f.architecture.eq_ignore_ascii_case("x64") {
            why.push(format!("{w} is {} (the worker image is x64)", f.architecture));
        } else {
            return Ok(f);
        }
    }
    bail!(
        "no worker size fits {disks} disks: {}. Add a larger size to [azure] vm_sizes (every source disk, \
         the OS disk too, is one data disk of the worker)",
        why.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sku(name: &str, disks: &str, premium: &str, loc: &str, restrictions: Value) -> Value {
        json!({"resourceType": "virtualMachines", "name": name, "tier": "Standard", "locations": [loc],
               "capabilities": [{"name": "MaxDataDiskCount", "value": disks}, {"name": "PremiumIO", "value": premium},
                                {"name": "UncachedDiskBytesPerSecond", "value": "152000000"},
                                {"name": "UncachedDiskIOPS", "value": "6400"}],
               "restrictions": restrictions})
    }

    #[test]
    fn the_first_size_that_takes_the_disks_is_chosen() {
        let page = json!({"value": [
            sku("Standard_D2s_v5", "4", "True", "westeurope", json!([])),
            sku("Standard_D4s_v5", "8", "True", "westeurope", json!([])),
            sku("Standard_D4_v5", "8", "False", "westeurope", json!([])),
            sku("Standard_D8s_v5", "16", "True", "westeurope",
                json!([{"type": "Location", "values": ["westeurope"], "reasonCode": "NotAvailableForSubscription"}])),
            sku("Standard_D16s_v5", "32", "True", "northeurope", json!([])),
            {"resourceType": "disks", "name": "Premium_LRS", "locations": ["westeurope"]},
        ]});
        let known = parse(&page, "WestEurope");
        assert_eq!(known.len(), 4);
        let wanted = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let f = pick(&wanted(&["Standard_D2s_v5", "Standard_D4s_v5"]), &known, 5, true).unwrap();
        assert_eq!(f.describe(), "Standard_D4s_v5: 8 data disks, 152 MB/s, 6400 IOPS uncached");
        let e = pick(
            &wanted(&["Standard_D2s_v5", "Standard_D4_v5", "Standard_D8s_v5", "Standard_D16s_v5"]),
            &known,
            5,
            true,
        )
        .unwrap_err()
        .to_string();
        for part in [
            "Standard_D2s_v5 takes 4 data disks",
            "Standard_D4_v5 takes no premium disks",
            "Standard_D8s_v5 is restricted here (NotAvailableForSubscription)",
            "Standard_D16s_v5 is not offered in this region",
        ] {
            assert!(e.contains(part), "{e}");
        }
        assert_eq!(pick(&wanted(&["Standard_D4_v5"]), &known, 5, false).unwrap().name, "Standard_D4_v5");
    }
}
