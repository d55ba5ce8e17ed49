//! `bakery base refresh`: the newest base AMI plus OS updates, published as the next base
//! version. It is a bake whose steps are the upgrade: only the blocks the updates change are
//! uploaded (direct mode), on top of the old base's snapshot.

use anyhow::Result;

use crate::aws::ami::{self, BaseRef};
use crate::aws::client::AwsContext;
use crate::bake::{Globals, Prepared};
use crate::cli::BaseRefreshArgs;
use crate::input;
use crate::manifest::Manifest;
use crate::naming;
use crate::provision::plan::Step;
use crate::recipe::Recipe;
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

pub fn refresh(a: &BaseRefreshArgs, g: &Globals) -> Result<Manifest> {
    crate::base::publish::check(&a.publish)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let ctx = rt.block_on(AwsContext::load());
    rt.block_on(ctx.require_credentials())?;
    let region = ctx.region(a.publish.region.as_deref())?;
    // Find the family before baking so the new name is known (and checked) up front.
    let base = rt.block_on(ami::resolve_base(
        &ctx,
        &region,
        &BaseRef::NamePattern(a.base_name.clone()),
    ))?;
    drop(rt);
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
    let mut recipe = Recipe {
        base_name: Some(a.base_name.clone()),
        output: Some("ami".into()),
        region: Some(region),
        copy_to: a.publish.copy_to.clone(),
        share_with: a.publish.share_with.clone(),
        mode: a.mode,
        ..Default::default()
    };
    // A refreshed base describes itself: its own family and version, and what it came from.
    recipe.tags.insert("base_ami_name".into(), family);
    recipe
        .tags
        .insert("base_ami_version".into(), version.clone());
    recipe.tags.insert("refreshed_from".into(), base.id.clone());
    let p = Prepared::custom(
        recipe,
        refresh_steps(&version, &built_at),
        name,
        new_bake_id(),
    )?;
    let mut m = crate::bake::ami::bake(p, a.publish.keep_on_error, g)?;
    m.kind = "base";
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
}
