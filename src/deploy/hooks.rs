//! The deploy's plugin hook points: `pre-deploy` (a failure stops the deploy before anything
//! changes), `post-deploy`, `deploy-failed`, `rollback` (reported, never change the result).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use serde_json::Value;

use super::Target;
use crate::cli::deploy::{DeployPluginArgs, Strategy};
use crate::input;
use crate::plugin::{Event, Hook, PluginSpec};

/// `--plugin NAME` with `--plugin-config NAME=JSON`, found before anything changes.
pub fn resolve(a: &DeployPluginArgs) -> Result<Vec<(PluginSpec, PathBuf)>> {
    let mut configs = BTreeMap::new();
    for c in &a.plugin_config {
        let (name, json) = c
            .split_once('=')
            .ok_or_else(|| input!("--plugin-config {c}: expected NAME=JSON"))?;
        let v: Value = serde_json::from_str(json)
            .map_err(|e| input!("--plugin-config {name}: not JSON: {e}"))?;
        if !a.plugins.iter().any(|p| p == name) {
            return Err(input!("--plugin-config {name}: no --plugin {name}"));
        }
        configs.insert(name.to_string(), v);
    }
    let specs: Vec<PluginSpec> = a
        .plugins
        .iter()
        .map(|n| PluginSpec {
            config: configs.get(n).cloned().unwrap_or(Value::Null),
            ..PluginSpec::named(n)
        })
        .collect();
    crate::plugin::resolve(&specs, &[])
}

/// The event of a deploy hook: the deploy id (as `bake_id` and `deploy_id`), strategy, target,
/// the image per region, and the bake manifest when deployed from one.
pub fn event(
    hook: Hook,
    deploy_id: &str,
    target: &Target,
    strategy: Strategy,
    images: &BTreeMap<&str, &str>,
    manifest: Option<Value>,
) -> Event {
    let mut e = Event::new(hook, deploy_id)
        .with("deploy_id", deploy_id)
        .with(
            "strategy",
            serde_json::to_value(strategy).unwrap_or_default(),
        )
        .with("target", serde_json::to_value(target).unwrap_or_default())
        .with(
            "image_ids",
            serde_json::to_value(images).unwrap_or_default(),
        );
    e.manifest = manifest;
    e
}
