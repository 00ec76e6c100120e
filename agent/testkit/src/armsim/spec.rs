//! What the simulator checks request bodies against: the models of
//! Microsoft's Python management SDK `azure-mgmt-compute` 37.0.0, generated
//! from Azure/azure-rest-api-specs for the api-versions the provider pins
//! (ComputeRP 2025-04-01, DiskRP 2025-01-02, GalleryRP 2024-03-03). `scripts/lib/armspec.sh`
//! installs the SDK and dumps its models (JSON names, types, read-only and
//! required flags, enums, bounds) once into `.cache/armspec/`; nothing here
//! is typed by hand.
//!
//! A body is refused, with ARM's error shape, for a member its model does
//! not have, a value of the wrong JSON type, a string outside its enum, a
//! number outside its bounds, a missing required member or a read-only one
//! sent.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{Map, Value};

/// The dumped models.
pub struct Spec {
    /// "azure-mgmt-compute 37.0.0".
    pub source: String,
    models: Map<String, Value>,
}

/// Why a body was refused: ARM's `error.code`, `message` and `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
    pub target: String,
}

impl Spec {
    /// The models, dumped on first use (one per test process).
    pub fn get() -> &'static Spec {
        static SPEC: OnceLock<Spec> = OnceLock::new();
        SPEC.get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            let out = Command::new("bash")
                .arg(root.join("scripts/lib/armspec.sh"))
                .output()
                .expect("scripts/lib/armspec.sh runs");
            assert!(out.status.success(), "scripts/lib/armspec.sh: {}", String::from_utf8_lossy(&out.stderr));
            let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            Spec::parse(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
        })
    }

    pub fn parse(text: &str) -> Result<Spec, String> {
        let doc: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let models = doc["models"].as_object().cloned().ok_or("no models")?;
        let source = format!(
            "{} {}",
            doc["sdk"]["package"].as_str().unwrap_or("?"),
            doc["sdk"]["version"].as_str().unwrap_or("?")
        );
        Ok(Spec { source, models })
    }

    /// Check `body` against the model `root` (e.g. `VirtualMachine`).
    pub fn check(&self, root: &str, body: &Value) -> Result<(), Refusal> {
        let props = self.props_of(root).ok_or_else(|| Refusal {
            code: "InvalidRequestContent",
            message: format!("the simulator has no model {root}"),
            target: String::new(),
        })?;
        self.object(root, props, body, "")
    }

    fn props_of(&self, model: &str) -> Option<&Map<String, Value>> {
        self.models.get(model)?["props"].as_object()
    }

    fn object(&self, what: &str, props: &Map<String, Value>, v: &Value, path: &str) -> Result<(), Refusal> {
        let Some(members) = v.as_object() else {
            return Err(content(format!("Error converting value to type '{what}'"), path));
        };
        for (k, val) in members {
            let here = join(path, k);
            let Some(p) = props.get(k) else {
                return Err(content(format!("Could not find member '{k}' on object of type '{what}'"), &here));
            };
            if p["readonly"] == true {
                return Err(invalid(format!("Property '{here}' is read-only and cannot be set."), &here));
            }
            if val.is_null() {
                continue;
            }
            self.value(p, p["type"].as_str().unwrap_or("object"), val, &here)?;
        }
        for (k, p) in props {
            if p["required"] == true && members.get(k).is_none_or(Value::is_null) {
                let here = join(path, k);
                return Err(invalid(format!("Required parameter '{here}' is missing (null)."), &here));
            }
        }
        Ok(())
    }

    fn value(&self, p: &Value, t: &str, v: &Value, path: &str) -> Result<(), Refusal> {
        let wrong = || Err(content(format!("Error converting value {v} to type '{t}'"), path));
        if let Some(inner) = t.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            let Some(items) = v.as_array() else { return wrong() };
            for (i, item) in items.iter().enumerate() {
                self.value(&Value::Null, inner, item, &format!("{path}[{i}]"))?;
            }
            return Ok(());
        }
        if let Some(inner) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
            let Some(items) = v.as_object() else { return wrong() };
            for (k, item) in items {
                self.value(&Value::Null, inner, item, &join(path, k))?;
            }
            return Ok(());
        }
        match t {
            "str" | "date" => {
                let Some(s) = v.as_str() else { return wrong() };
                let open = p["enum_name"].as_str().is_some_and(|n| OPEN_ENUMS.contains(&n));
                if let Some(allowed) = p["enum"].as_array().filter(|_| !open) {
                    if !allowed.iter().any(|a| a == s) {
                        let list: Vec<String> =
                            allowed.iter().filter_map(Value::as_str).map(|a| format!("'{a}'")).collect();
                        return Err(invalid(
                            format!(
                                "The value '{s}' of parameter '{path}' is not allowed. Allowed values are {}.",
                                list.join(", ")
                            ),
                            path,
                        ));
                    }
                }
                if let Some(max) = p["max_length"].as_u64() {
                    if s.chars().count() as u64 > max {
                        return Err(invalid(format!("'{path}' is longer than {max} characters."), path));
                    }
                }
                Ok(())
            }
            "int" | "float" => {
                let Some(n) = v.as_f64() else { return wrong() };
                if t == "int" && !(v.is_i64() || v.is_u64()) {
                    return wrong();
                }
                if p["min"].as_f64().is_some_and(|m| n < m) || p["max"].as_f64().is_some_and(|m| n > m) {
                    return Err(invalid(format!("The value {v} of parameter '{path}' is out of range."), path));
                }
                Ok(())
            }
            "bool" => v.is_boolean().then_some(()).map_or_else(wrong, Ok),
            "object" => Ok(()),
            "nested" => {
                let props = p["props"].as_object().cloned().unwrap_or_default();
                self.object(path, &props, v, path)
            }
            model => match self.props_of(model) {
                Some(props) => self.object(model, props, v, path),
                None => Ok(()), // a model the dump does not reach: unchecked
            },
        }
    }
}

/// Enums the spec itself says are not the list of what is allowed:
/// `VirtualMachineSizeTypes` is "deprecated ... the recommended way to get
/// the list of available sizes is using these APIs" (ComputeRP 2025-04-01
/// `HardwareProfile.vmSize`); the simulator checks a size against the SKUs
/// it serves instead.
const OPEN_ENUMS: [&str; 1] = ["VirtualMachineSizeTypes"];

fn join(path: &str, k: &str) -> String {
    if path.is_empty() {
        k.to_owned()
    } else {
        format!("{path}.{k}")
    }
}

fn content(why: String, path: &str) -> Refusal {
    Refusal {
        code: "InvalidRequestContent",
        message: format!("The request content was invalid and could not be deserialized: '{why}. Path '{path}'.'."),
        target: path.to_owned(),
    }
}

fn invalid(message: String, path: &str) -> Refusal {
    Refusal { code: "InvalidParameter", message, target: path.to_owned() }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn refuses_what_the_models_do_not_allow() {
        let spec = Spec::get();
        let ok = json!({"location": "westeurope", "properties": {"creationData": {"createOption": "Copy", "sourceResourceId": "/x"}, "incremental": true}});
        spec.check("Snapshot", &ok).unwrap();
        let bad = |body: Value| spec.check("Snapshot", &body).unwrap_err();
        let r =
            bad(json!({"location": "w", "properties": {"creationData": {"createOption": "Copy"}, "incrementl": true}}));
        assert_eq!((r.code, r.target.as_str()), ("InvalidRequestContent", "properties.incrementl"));
        let r = bad(json!({"location": "w", "properties": {"creationData": {"createOption": "Clone"}}}));
        assert_eq!((r.code, r.target.as_str()), ("InvalidParameter", "properties.creationData.createOption"));
        assert!(r.message.contains("'Copy'"), "{}", r.message);
        let r = bad(
            json!({"location": "w", "properties": {"creationData": {"createOption": "Copy"}, "incremental": "yes"}}),
        );
        assert_eq!(r.target, "properties.incremental");
        let r = bad(json!({"properties": {"creationData": {"createOption": "Copy"}}}));
        assert_eq!((r.code, r.target.as_str()), ("InvalidParameter", "location"));
        let r = bad(
            json!({"location": "w", "properties": {"creationData": {"createOption": "Copy"}, "provisioningState": "Succeeded"}}),
        );
        assert!(r.message.contains("read-only"), "{}", r.message);
        let r = bad(
            json!({"location": "w", "properties": {"creationData": {"createOption": "Copy", "instantAccessDurationMinutes": 0}}}),
        );
        assert_eq!(r.target, "properties.creationData.instantAccessDurationMinutes");
        // A list of models, a map of models.
        let vm = |nv: &str| {
            json!({"location": "w", "identity": {"type": "UserAssigned", "userAssignedIdentities": {"/id": {}}},
                   "properties": {"networkProfile": {"networkApiVersion": nv, "networkInterfaceConfigurations": [
                       {"name": "n", "properties": {"ipConfigurations": [{"name": "i", "properties": {"primary": true}}]}}]}}})
        };
        spec.check("VirtualMachine", &vm("2022-11-01")).unwrap();
        let r = spec.check("VirtualMachine", &vm("2025-03-01")).unwrap_err();
        assert_eq!(r.target, "properties.networkProfile.networkApiVersion");
        let mut nested = vm("2022-11-01");
        nested["properties"]["networkProfile"]["networkInterfaceConfigurations"][0]["properties"]["ipConfigurations"]
            [0]["properties"]["primry"] = true.into();
        let r = spec.check("VirtualMachine", &nested).unwrap_err();
        assert_eq!(r.target, "properties.networkProfile.networkInterfaceConfigurations[0].properties.ipConfigurations[0].properties.primry");
    }
}
