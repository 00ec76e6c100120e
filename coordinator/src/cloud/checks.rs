//! What `diskferry preflight` reports, one [`Check`] each: the types a
//! provider's own checks (`Cloud::preflight`) are made of.

use super::Consistency;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Ok,
    Problem,
    /// The check itself could not be made (no permission to look, an
    /// answer it does not understand): not a problem, not an ok.
    CouldNotCheck,
}

/// One check.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    /// What was checked, e.g. `permissions: work group`.
    pub name: String,
    pub verdict: Verdict,
    /// What was found.
    pub detail: String,
    /// What to do about a problem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { name: name.into(), verdict: Verdict::Ok, detail: detail.into(), fix: None }
    }

    pub fn problem(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self { name: name.into(), verdict: Verdict::Problem, detail: detail.into(), fix: Some(fix.into()) }
    }

    pub fn unknown(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { name: name.into(), verdict: Verdict::CouldNotCheck, detail: detail.into(), fix: None }
    }
}

/// What a provider checks of one replica's source.
#[derive(Debug, Clone)]
pub struct Source {
    pub replica: String,
    pub vm: String,
    pub consistency: Consistency,
    pub stop_source: bool,
}
