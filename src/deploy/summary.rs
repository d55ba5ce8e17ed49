//! The one line a finished deploy or rollback ends with on stderr, for people: what changed in
//! each region (group, launch template version, AMI) and how long it took. A pure function of the
//! JSON the command prints on stdout, so the line never says more than the record does.
//!
//! `✓ deployed api (swap) in 4.2s — us-east-1: api launches ami-0b… (launch template lt-0a…
//! version 5, was 4)` on a terminal; the same text as one timestamped log line under CI
//! ([`crate::progress::done`]).

use serde_json::Value;

use crate::progress::human_duration;

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("?")
}

fn num_or_str(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(t) => Some(t.clone()),
        _ => None,
    }
}

/// One region of a swap (also the first half of a rolling deploy).
fn swap_part(d: &Value, image: &str) -> String {
    let asg = s(d, "asg");
    match d.get("new_version").and_then(num_or_str) {
        Some(v) => format!(
            "{asg} launches {image} (launch template {} version {v}, was {})",
            s(d, "launch_template"),
            d.get("previous_version")
                .and_then(num_or_str)
                .unwrap_or_else(|| "?".into()),
        ),
        None => format!("{asg} already launched {image}: nothing changed"),
    }
}

/// What one region's deploy changed, from its `detail`.
fn deploy_part(region: &str, image: &str, d: &Value) -> String {
    let what = if let Some(sw) = d.get("swap") {
        let replaced = d.get("replaced").and_then(Value::as_u64).unwrap_or(0);
        format!(
            "{}, {replaced} instance{} replaced",
            swap_part(sw, image),
            if replaced == 1 { "" } else { "s" }
        )
    } else if d.get("cluster").is_some() {
        match d.get("disabled").and_then(Value::as_str) {
            Some(old) => format!(
                "{} serves {image} (launch template {} version {}; {old} disabled)",
                s(d, "serving"),
                s(d, "launch_template"),
                d.get("launch_template_version")
                    .and_then(num_or_str)
                    .unwrap_or_else(|| "?".into()),
            ),
            None => format!(
                "{} already served {image}: nothing changed",
                s(d, "serving")
            ),
        }
    } else {
        swap_part(d, image)
    };
    format!("{region}: {what}")
}

/// The line of a deploy whose record (`kind: deploy`) is `out`, after `seconds`.
pub fn deploy_line(out: &Value, seconds: f64) -> String {
    let parts: Vec<String> = out["regions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| deploy_part(s(r, "region"), s(r, "image_id"), &r["detail"]))
        .collect();
    format!(
        "deployed {} ({}) in {} — {}",
        target_name(&out["target"]),
        s(out, "strategy"),
        human_duration(seconds),
        parts.join("; ")
    )
}

/// The line of a rollback whose record (`kind: rollback`) is `out`, after `seconds`.
pub fn rollback_line(out: &Value, seconds: f64) -> String {
    let parts: Vec<String> = out["regions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let d = &r["detail"];
            let what = if d.get("cluster").is_some() {
                format!(
                    "{} serves again ({} {})",
                    s(d, "serving"),
                    s(d, "rolled_back"),
                    s(d, "newer")
                )
            } else {
                format!(
                    "{} back on launch template version {} ({})",
                    s(d, "asg"),
                    d.get("restored_version")
                        .and_then(num_or_str)
                        .unwrap_or_else(|| "?".into()),
                    s(d, "image_id")
                )
            };
            format!("{}: {what}", s(r, "region"))
        })
        .collect();
    format!(
        "rolled back {} in {} — {}",
        target_name(&out["target"]),
        human_duration(seconds),
        parts.join("; ")
    )
}

/// A target as serialized (`{"asg": "api"}` or `{"cluster": "web"}`): its name.
fn target_name(t: &Value) -> String {
    match t {
        Value::String(n) => n.clone(),
        Value::Object(m) => m
            .values()
            .find_map(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "?".into()),
        _ => "?".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_swap_names_group_template_version_and_ami_per_region() {
        let out = json!({"kind": "deploy", "strategy": "swap", "target": {"asg": "api"}, "status": "succeeded",
        "regions": [
            {"region": "us-east-1", "image_id": "ami-1", "status": "succeeded", "detail":
                {"asg": "api", "launch_template": "lt-1", "previous_version": "4", "new_version": 5, "applied": "asg"}},
            {"region": "eu-west-1", "image_id": "ami-2", "status": "succeeded", "detail":
                {"asg": "api", "launch_template": "lt-2", "previous_version": "1", "new_version": null}},
        ]});
        assert_eq!(
            deploy_line(&out, 4.21),
            "deployed api (swap) in 4.2s — us-east-1: api launches ami-1 (launch template lt-1 \
             version 5, was 4); eu-west-1: api already launched ami-2: nothing changed"
        );
    }

    #[test]
    fn rolling_and_red_black_say_what_they_replaced() {
        let rolling = json!({"strategy": "rolling", "target": {"asg": "api"}, "regions": [
            {"region": "us-east-1", "image_id": "ami-1", "detail": {"swap":
                {"asg": "api", "launch_template": "lt-1", "previous_version": "$Default", "new_version": 3},
             "replaced": 2}}]});
        assert_eq!(
            deploy_line(&rolling, 83.4),
            "deployed api (rolling) in 1m 23s — us-east-1: api launches ami-1 (launch template \
             lt-1 version 3, was $Default), 2 instances replaced"
        );
        let rb = json!({"strategy": "red-black", "target": {"cluster": "web"}, "regions": [
            {"region": "us-west-2", "image_id": "ami-9", "detail": {"cluster": "web", "serving": "web-v004",
             "disabled": "web-v003", "launch_template": "lt-9", "launch_template_version": 1}}]});
        assert_eq!(
            deploy_line(&rb, 61.0),
            "deployed web (red-black) in 1m 01s — us-west-2: web-v004 serves ami-9 (launch \
             template lt-9 version 1; web-v003 disabled)"
        );
    }

    #[test]
    fn rollbacks_say_what_serves_again() {
        let out = json!({"kind": "rollback", "target": {"asg": "api"}, "regions": [
            {"region": "us-east-1", "status": "rolled-back", "detail":
                {"asg": "api", "restored_version": "4", "image_id": "ami-0"}}]});
        assert_eq!(
            rollback_line(&out, 2.0),
            "rolled back api in 2.0s — us-east-1: api back on launch template version 4 (ami-0)"
        );
        let rb = json!({"kind": "rollback", "target": {"cluster": "web"}, "regions": [
            {"region": "us-east-1", "detail": {"cluster": "web", "serving": "web-v003",
             "rolled_back": "web-v004", "newer": "disabled"}}]});
        assert_eq!(
            rollback_line(&rb, 2.0),
            "rolled back web in 2.0s — us-east-1: web-v003 serves again (web-v004 disabled)"
        );
    }
}
