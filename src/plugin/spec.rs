//! A plugin as a recipe names it (`plugins: [{name: notify-webhook, config: {url: ...}}]`), and
//! turning a list of them into executables before anything is baked.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::input;

/// How long a plugin may run per call unless its `timeout:` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PluginSpec {
    /// Looked up by [`find`](super::find): `plugins/NAME`, `PREFIX/share/bakery/plugins/NAME`,
    /// `bakery-plugin-NAME` on PATH.
    pub name: String,
    /// Handed to the plugin as the event's `config` (an object; `{}` when absent).
    #[serde(default = "empty_object")]
    pub config: Value,
    /// Seconds per call (default 60); a plugin still running then is killed and fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

impl PluginSpec {
    /// A plugin from `--plugin NAME`: no config, the default timeout.
    pub fn named(name: &str) -> PluginSpec {
        PluginSpec {
            name: name.to_string(),
            config: empty_object(),
            timeout: None,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TIMEOUT)
    }

    /// What a recipe can get wrong that serde does not catch.
    pub fn check(&self) -> Result<()> {
        if self.timeout == Some(0) {
            return Err(input!(
                "plugin `{}`: `timeout: 0`; give the seconds a call may take (default 60)",
                self.name
            ));
        }
        if !self.config.is_object() && !self.config.is_null() {
            return Err(input!(
                "plugin `{}`: `config` must be a mapping of keys to values",
                self.name
            ));
        }
        Ok(())
    }
}

/// Check and locate every plugin, in order, before the bake starts: a typo is an input error
/// (exit 2) with nothing created. A `config: null` becomes `{}`.
pub fn resolve(specs: &[PluginSpec], extra_dirs: &[PathBuf]) -> Result<Vec<(PluginSpec, PathBuf)>> {
    specs
        .iter()
        .map(|s| {
            s.check()?;
            let mut s = s.clone();
            if s.config.is_null() {
                s.config = empty_object();
            }
            let path = super::find(&s.name, extra_dirs)?;
            Ok((s, path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn recipe_yaml_parses_strictly() {
        let yaml = "- name: notify-webhook\n  config: {url: 'http://127.0.0.1:9/x', channel: '#deploys'}\n  timeout: 5\n- name: scan\n";
        let specs: Vec<PluginSpec> = serde_yaml_ng::from_str(yaml).unwrap();
        assert_eq!(
            specs[0].config,
            json!({"url": "http://127.0.0.1:9/x", "channel": "#deploys"})
        );
        assert_eq!(specs[0].timeout(), Duration::from_secs(5));
        assert_eq!(specs[1], PluginSpec::named("scan"));
        assert_eq!(specs[1].timeout(), DEFAULT_TIMEOUT);
        let e = serde_yaml_ng::from_str::<Vec<PluginSpec>>("- name: x\n  confg: {}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `confg`"), "{e}");
    }

    #[test]
    fn zero_timeouts_and_scalar_configs_are_input_errors() {
        let s = PluginSpec {
            timeout: Some(0),
            ..PluginSpec::named("x")
        };
        assert_eq!(
            crate::error::exit_code(&s.check().unwrap_err()),
            crate::error::EXIT_INPUT
        );
        let s = PluginSpec {
            config: json!("url"),
            ..PluginSpec::named("x")
        };
        assert!(s.check().is_err());
    }
}
