//! Plugins: executables bakery runs at named hook points with one JSON event on stdin, answering
//! with one JSON object on stdout (`plugins/README.md` is the protocol). Nothing is linked in.
//!
//! - `spec`: the recipe's `plugins:` entries and resolving them to files before a bake starts
//! - `find`: where a plugin named NAME lives
//! - `event`: hooks, the event sent and the reply received
//! - `call`: running one plugin once, with a deadline
//! - `tags`: merging the tags plugins return, protecting bakery's own

mod call;
mod event;
mod find;
mod spec;
mod tags;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{anyhow, Result};
use tracing::{info, warn};

pub use call::{call, parse_reply, plugin_name, MAX_REPLY_BYTES};
pub use event::{Event, Hook, Reply, PROTOCOL};
pub use find::{find, find_in, search_dirs, PATH_PREFIX};
pub use spec::{resolve, PluginSpec, DEFAULT_TIMEOUT};
pub use tags::{is_protected, PROTECTED_TAGS};

/// Run every plugin for `hook`, in order, each with `base_event` plus its own `config`, and
/// return the tags they added (merged, protected keys refused, AWS limits checked).
///
/// For hooks that abort (all but `post-bake`) the first failure is returned and later plugins
/// do not run. For `post-bake` every plugin runs and the failures are returned together; the
/// caller logs them and keeps the bake's result.
pub fn run_hook(
    plugins: &[(PluginSpec, PathBuf)],
    hook: Hook,
    base_event: &Event,
) -> Result<BTreeMap<String, String>> {
    let mut merged = BTreeMap::new();
    let mut failures = Vec::new();
    for (spec, path) in plugins {
        let event = Event {
            hook,
            config: spec.config.clone(),
            ..base_event.clone()
        };
        let result = call(path, hook, &event, spec.timeout()).and_then(|reply| {
            if let Some(m) = reply.message.as_deref().filter(|m| !m.is_empty()) {
                info!(plugin = %spec.name, %hook, "{m}");
            }
            tags::merge(&mut merged, &spec.name, reply.tags)
        });
        match result {
            Ok(()) => {}
            Err(e) if hook.aborts() => return Err(e),
            Err(e) => {
                warn!(plugin = %spec.name, %hook, "{e:#}");
                failures.push(e);
            }
        }
    }
    match failures.len() {
        0 => Ok(merged),
        1 => Err(failures.remove(0)),
        n => Err(anyhow!(
            "{n} {hook} plugins failed: {}",
            failures
                .iter()
                .map(|e| format!("{e:#}"))
                .collect::<Vec<_>>()
                .join("; ")
        )),
    }
}

/// One judge's verdict on a canary.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub plugin: String,
    /// 0..=100.
    pub score: f64,
    pub reason: Option<String>,
}

/// Run every plugin's `judge` hook in order; each must reply with a score in 0..=100. The caller
/// compares the scores with its pass mark (the lowest is the canary's score).
pub fn run_judge(plugins: &[(PluginSpec, PathBuf)], base_event: &Event) -> Result<Vec<Verdict>> {
    let mut verdicts = Vec::new();
    for (spec, path) in plugins {
        let event = Event {
            hook: Hook::Judge,
            config: spec.config.clone(),
            ..base_event.clone()
        };
        let reply = call(path, Hook::Judge, &event, spec.timeout())?;
        let score = match reply.score {
            Some(s) if (0.0..=100.0).contains(&s) => s,
            Some(s) => {
                return Err(anyhow!(
                    "plugin {} (judge) replied with score {s}; a score is 0 to 100",
                    spec.name
                ))
            }
            None => {
                return Err(anyhow!(
                    "plugin {} (judge) replied without a score",
                    spec.name
                ))
            }
        };
        info!(plugin = %spec.name, score, "{}", reply.reason.as_deref().unwrap_or(""));
        verdicts.push(Verdict {
            plugin: spec.name.clone(),
            score,
            reason: reply.reason,
        });
    }
    Ok(verdicts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn plugin(
        dir: &Path,
        name: &str,
        body: &str,
        config: serde_json::Value,
    ) -> (PluginSpec, PathBuf) {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        (
            PluginSpec {
                name: name.into(),
                config,
                timeout: Some(10),
            },
            path,
        )
    }

    #[test]
    fn tags_from_several_plugins_merge_in_order_and_each_gets_its_config() {
        let t = tempfile::tempdir().unwrap();
        let seen = t.path().join("seen");
        let plugins = vec![
            plugin(
                t.path(),
                "scan",
                r#"echo '{"tags": {"security_scan": "passed", "owner": "a"}}'"#,
                json!({}),
            ),
            plugin(t.path(), "nothing", "cat >/dev/null", json!(null)),
            plugin(
                t.path(),
                "owner",
                &format!(
                    "cat > {}; echo '{{\"tags\": {{\"owner\": \"b\"}}, \"message\": \"ok\"}}'",
                    seen.display()
                ),
                json!({"k": 1}),
            ),
        ];
        let base = Event {
            status: Some("running".into()),
            ..Event::new(Hook::PreProvision, "bk-1")
        };
        let tags = run_hook(&plugins, Hook::PostProvision, &base).unwrap();
        assert_eq!(
            tags,
            [("owner", "b"), ("security_scan", "passed")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        );
        let sent: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&seen).unwrap()).unwrap();
        assert_eq!(
            (&sent["hook"], &sent["config"], &sent["status"]),
            (
                &json!("post-provision"),
                &json!({"k": 1}),
                &json!("running")
            )
        );
    }

    #[test]
    fn a_protected_tag_is_refused_naming_plugin_and_key() {
        let t = tempfile::tempdir().unwrap();
        let plugins = vec![plugin(
            t.path(),
            "sneaky",
            r#"echo '{"tags": {"appversion": "evil-1.0"}}'"#,
            json!({}),
        )];
        let e = run_hook(
            &plugins,
            Hook::PostRegister,
            &Event::new(Hook::PostRegister, "bk-1"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("plugin sneaky tried to set tag `appversion`"),
            "{e}"
        );
    }

    #[test]
    fn aborting_hooks_stop_at_the_first_failure_post_bake_runs_every_plugin() {
        let t = tempfile::tempdir().unwrap();
        let ran = t.path().join("ran");
        let plugins = vec![
            plugin(
                t.path(),
                "broken",
                "echo 'no route to host' >&2; exit 3",
                json!({}),
            ),
            plugin(t.path(), "bad-json", "echo 'not json'", json!({})),
            plugin(
                t.path(),
                "after",
                &format!("touch {}", ran.display()),
                json!({}),
            ),
        ];
        let e = run_hook(
            &plugins,
            Hook::PreProvision,
            &Event::new(Hook::PreProvision, "bk-1"),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "plugin broken (pre-provision) failed (exit 3): no route to host"
        );
        assert!(!ran.exists());
        let e = format!(
            "{:#}",
            run_hook(
                &plugins,
                Hook::PostBake,
                &Event::new(Hook::PostBake, "bk-1")
            )
            .unwrap_err()
        );
        assert!(e.starts_with("2 post-bake plugins failed: plugin broken (post-bake) failed (exit 3): no route to host; plugin bad-json (post-bake): the reply"), "{e}");
        assert!(ran.exists());
    }

    #[test]
    fn a_timeout_fails_the_hook() {
        let t = tempfile::tempdir().unwrap();
        let (mut spec, path) = plugin(t.path(), "sleepy", "sleep 20", json!({}));
        spec.timeout = Some(1);
        let e = run_hook(
            &[(spec, path)],
            Hook::PostProvision,
            &Event::new(Hook::PostProvision, "bk-1"),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "plugin sleepy (post-provision) timed out after 1s and was killed (nothing on stderr)"
        );
    }

    #[test]
    fn judges_must_reply_with_a_score() {
        let t = tempfile::tempdir().unwrap();
        let good = plugin(
            t.path(),
            "good",
            r#"echo '{"score": 97.5, "reason": "fine"}'"#,
            json!({}),
        );
        let v = run_judge(
            std::slice::from_ref(&good),
            &Event::new(Hook::Judge, "dp-1"),
        )
        .unwrap();
        assert_eq!(
            v,
            vec![Verdict {
                plugin: "good".into(),
                score: 97.5,
                reason: Some("fine".into())
            }]
        );
        let none = plugin(t.path(), "none", "true", json!({}));
        let e = run_judge(&[good, none], &Event::new(Hook::Judge, "dp-1"))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "plugin none (judge) replied without a score");
        let big = plugin(t.path(), "big", r#"echo '{"score": 250}'"#, json!({}));
        assert!(run_judge(&[big], &Event::new(Hook::Judge, "dp-1")).is_err());
    }
}
