//! `bakery base refresh`: the newest base AMI plus OS updates, published as the next base
//! version. It is a bake whose steps are the upgrade (AMI source → AMI sink): only the blocks
//! the updates change are uploaded (direct mode), on top of the old base's snapshot.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Result;

use crate::aws::ami::{self, BaseRef};
use crate::cli::BaseRefreshArgs;
use crate::context::{Aws, Globals};
use crate::input;
use crate::manifest::{Kind, Manifest};
use crate::naming;
use crate::pipeline::{self, Job, Sink, Source, TagRule};
use crate::provision::plan::Step;
use crate::workdir::new_bake_id;

/// The upgrade, then GRUB and initramfs brought up to date (a new kernel must be in grub.cfg;
/// a new GRUB must match the core image on disk), then the version record and generalization.
pub fn refresh_steps(version: &str, built_at: &str) -> Vec<Step> {
    vec![
        Step::Run {
            layer: "refresh".into(),
            command: "set -e
apt-get -q -o Acquire::Retries=3 update
apt-get -q -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold dist-upgrade
apt-get -q -y autoremove --purge"
                .into(),
        },
        Step::Grub,
        Step::Run {
            layer: "refresh".into(),
            command: format!(
                "set -e
f=/etc/bakery/base.json
if [ -f $f ]; then
  sed -i -e 's/\"version\": \"[^\"]*\"/\"version\": \"{version}\"/' -e 's/\"built_at\": \"[^\"]*\"/\"built_at\": \"{built_at}\"/' $f
fi"
            ),
        },
        Step::Generalize,
    ]
}

/// A refreshed base describes itself: its own family and version, and what it came from
/// (these win over the tags a bake would give it).
pub fn refresh_tags(family: &str, version: &str, from: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("base_ami_name".to_string(), family.to_string()),
        ("base_ami_version".to_string(), version.to_string()),
        ("refreshed_from".to_string(), from.to_string()),
    ])
}

pub fn refresh(a: &BaseRefreshArgs, g: &Globals) -> Result<Manifest> {
    let target = super::ami_target(&a.publish)?;
    target.check()?;
    let aws = Aws::load(true)?;
    let region = aws.region(a.publish.region.as_deref())?;
    // Find the family before baking so the new name is known (and checked) up front.
    let pattern = BaseRef::NamePattern(a.base_name.clone());
    let base = aws
        .rt
        .block_on(ami::resolve_base(&aws.ctx, &region, &pattern))?;
    let family = a
        .family
        .clone()
        .or_else(|| base.tags.get("base_ami_name").cloned())
        .ok_or_else(|| input!("{}: has no base_ami_name tag; pass --family NAME", base.id))?;
    let now = time::OffsetDateTime::now_utc();
    let version = naming::stamp(now);
    let name = naming::sanitize_name_part(&format!("{family}-{version}"));
    naming::validate_ami_name(&name).map_err(|e| input!("{e}"))?;
    let built_at = now.format(&time::format_description::well_known::Rfc3339)?;
    let job = Job {
        kind: Kind::Base,
        bake_id: new_bake_id(),
        name,
        now,
        started: Instant::now(),
        steps: refresh_steps(&version, &built_at),
        packages: vec![],
        layers: vec![],
        plugins: vec![],
        tags: TagRule::Image(refresh_tags(&family, &version, &base.id)),
        bake_key: None,
        shell: None,
        policy: None,
        disk_size: None,
    };
    let source = Source::Ami {
        base: pattern,
        mode: a.mode.map(Into::into),
    };
    let target = crate::pipeline::sink::ami::AmiTarget {
        region: Some(region),
        ..target
    };
    let mut m = pipeline::run(&job, source, Sink::Ami(target), g)?;
    // The manifest's base is the new base itself.
    m.base.version = version;
    Ok(m)
}

#[cfg(test)]
mod tests {
    #[test]
    fn refresh_upgrades_then_regenerates_grub_and_generalizes() {
        let steps = super::refresh_steps("202612010000", "2026-12-01T00:00:00Z");
        let labels: Vec<String> = steps.iter().map(|s| s.label()).collect();
        assert!(labels[0].starts_with("refresh: run set -e"));
        assert_eq!(labels[1], "install GRUB (BIOS)");
        assert_eq!(labels.last().unwrap(), "generalize");
        match &steps[0] {
            crate::provision::plan::Step::Run { command, .. } => {
                assert!(command.contains("dist-upgrade"))
            }
            _ => panic!(),
        }
    }

    #[test]
    fn a_refreshed_base_names_its_family_version_and_origin() {
        let t = super::refresh_tags("bakery-base-bookworm", "2", "ami-1");
        assert_eq!(t["base_ami_name"], "bakery-base-bookworm");
        assert_eq!(t["base_ami_version"], "2");
        assert_eq!(t["refreshed_from"], "ami-1");
    }
}
