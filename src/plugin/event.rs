//! What bakery sends a plugin (the event) and what it may answer (the reply). Protocol 1, see
//! `plugins/README.md`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The protocol version every event carries.
pub const PROTOCOL: u32 = 1;

/// The named points where plugins run; the kebab-case name is the plugin's first argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    /// The image is mounted, before the first layer.
    PreProvision,
    /// All packages are installed, before unmount.
    PostProvision,
    /// An AMI is registered (once per region).
    PostRegister,
    /// The manifest is final (success or failure).
    PostBake,
    /// A deploy's canary window ended; the reply carries a score.
    Judge,
    /// A deploy is about to change anything (a failure stops it).
    PreDeploy,
    /// A deploy finished (every region succeeded).
    PostDeploy,
    /// A deploy failed (after its automatic rollback).
    DeployFailed,
    /// `bakery rollback` finished.
    Rollback,
}

impl Hook {
    pub const ALL: [Hook; 9] = [
        Hook::PreProvision,
        Hook::PostProvision,
        Hook::PostRegister,
        Hook::PostBake,
        Hook::Judge,
        Hook::PreDeploy,
        Hook::PostDeploy,
        Hook::DeployFailed,
        Hook::Rollback,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Hook::PreProvision => "pre-provision",
            Hook::PostProvision => "post-provision",
            Hook::PostRegister => "post-register",
            Hook::PostBake => "post-bake",
            Hook::Judge => "judge",
            Hook::PreDeploy => "pre-deploy",
            Hook::PostDeploy => "post-deploy",
            Hook::DeployFailed => "deploy-failed",
            Hook::Rollback => "rollback",
        }
    }

    /// Whether a failing plugin stops the hook (and so the bake or deploy). `post-bake` and the
    /// deploy's `post-deploy`, `deploy-failed` and `rollback` run every plugin and only report:
    /// they happen after the result is decided.
    pub fn aborts(self) -> bool {
        !matches!(
            self,
            Hook::PostBake | Hook::PostDeploy | Hook::DeployFailed | Hook::Rollback
        )
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One JSON object on the plugin's stdin. `hook` and `config` are filled per call by
/// [`run_hook`](super::run_hook); the caller fills the rest once per hook point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Always [`PROTOCOL`].
    pub protocol: u32,
    pub hook: Hook,
    pub bake_id: String,
    /// The plugin's `config:` from the recipe (`{}` when none).
    #[serde(default)]
    pub config: Value,
    /// `succeeded` / `failed` (post-bake), otherwise usually absent.
    #[serde(default)]
    pub status: Option<String>,
    /// The one-line error of a failed bake.
    #[serde(default)]
    pub error: Option<String>,
    /// The bake manifest as printed on stdout (post-register, post-bake).
    #[serde(default)]
    pub manifest: Option<Value>,
    /// Where the mounted image's root is visible to the plugin (pre/post-provision only).
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// Hook-specific keys (`region`, `image_id`, the canary's details, ...), at the top level.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Event {
    /// An event with only the required keys; set the others with struct update or [`Event::with`].
    pub fn new(hook: Hook, bake_id: &str) -> Event {
        Event {
            protocol: PROTOCOL,
            hook,
            bake_id: bake_id.to_string(),
            config: Value::Object(Map::new()),
            status: None,
            error: None,
            manifest: None,
            root: None,
            extra: Map::new(),
        }
    }

    /// Add a hook-specific top-level key (e.g. `region`).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Event {
        self.extra.insert(key.to_string(), value.into());
        self
    }
}

/// The plugin's answer; every key is optional and unknown keys are ignored.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Reply {
    /// Merged into the image's tags (post-provision, post-register).
    pub tags: BTreeMap<String, String>,
    /// Logged.
    pub message: Option<String>,
    /// `judge`: 0..=100.
    pub score: Option<f64>,
    /// `judge`: why.
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hook_names_are_kebab_case_in_json_and_on_the_command_line() {
        for h in Hook::ALL {
            assert_eq!(serde_json::to_value(h).unwrap(), json!(h.as_str()));
            assert_eq!(
                serde_json::from_value::<Hook>(json!(h.as_str())).unwrap(),
                h
            );
        }
        assert!(!Hook::PostBake.aborts());
        assert!(Hook::PostRegister.aborts());
    }

    #[test]
    fn event_json_has_every_key_and_extras_at_the_top() {
        let e = Event {
            status: Some("succeeded".into()),
            ..Event::new(Hook::PostBake, "bk-1")
        }
        .with("region", "us-east-1");
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            json!({"protocol": 1, "hook": "post-bake", "bake_id": "bk-1", "config": {}, "status": "succeeded",
                   "error": null, "manifest": null, "root": null, "region": "us-east-1"})
        );
        assert_eq!(serde_json::from_value::<Event>(v).unwrap(), e);
    }

    #[test]
    fn reply_keys_are_optional_and_unknown_ones_ignored() {
        let r: Reply =
            serde_json::from_str(r#"{"tags": {"a": "b"}, "score": 97.5, "later": [1]}"#).unwrap();
        assert_eq!(r.tags.get("a").map(String::as_str), Some("b"));
        assert_eq!(r.score, Some(97.5));
        assert_eq!(
            serde_json::from_str::<Reply>("{}").unwrap(),
            Reply::default()
        );
        assert!(serde_json::from_str::<Reply>(r#"{"tags": {"n": 1}}"#).is_err());
    }
}
