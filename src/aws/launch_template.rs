//! Launch templates as groups name them ([`LtRef`]: what deploy points groups at and `images
//! prune` resolves to AMIs in use), and deleting a version (a deploy's ledger entries). Making
//! and resolving versions is the deploy's (`deploy::lt`).

use anyhow::{Context, Result};
use aws_sdk_autoscaling::types::LaunchTemplateSpecification;

use super::error::sdk;

/// A launch template as an ASG names it: by id or by name, and a version string. Deploy points
/// groups at these; `images prune` resolves them to the AMIs in use.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LtRef {
    pub id: Option<String>,
    pub name: Option<String>,
    /// `3`, `$Default` or `$Latest` (AWS's default when absent is `$Default`).
    pub version: String,
}

impl LtRef {
    pub fn of(spec: &LaunchTemplateSpecification) -> LtRef {
        LtRef {
            id: spec.launch_template_id().map(String::from),
            name: spec.launch_template_name().map(String::from),
            // A group that names no version (or an empty one) runs the template's default.
            version: spec
                .version()
                .filter(|v| !v.is_empty())
                .unwrap_or("$Default")
                .to_string(),
        }
    }

    /// `of`, for a specification that names a template at all (an override may name none).
    pub fn named(spec: &LaunchTemplateSpecification) -> Option<LtRef> {
        (spec.launch_template_id().is_some() || spec.launch_template_name().is_some())
            .then(|| LtRef::of(spec))
    }

    /// The template's id, else its name.
    pub fn label(&self) -> &str {
        self.id.as_deref().or(self.name.as_deref()).unwrap_or("?")
    }

    /// The same template, named the same way (id or name), at `version`.
    pub fn spec(&self, version: &str) -> LaunchTemplateSpecification {
        let b = LaunchTemplateSpecification::builder().version(version);
        match (&self.id, &self.name) {
            (Some(id), _) => b.launch_template_id(id).build(),
            (None, Some(n)) => b.launch_template_name(n).build(),
            (None, None) => b.build(),
        }
    }

    pub fn describe(&self) -> String {
        format!("launch template {} version {}", self.label(), self.version)
    }
}

/// Delete one version; one already gone is fine.
pub async fn delete_version(
    ec2: &aws_sdk_ec2::Client,
    template_id: &str,
    version: i64,
) -> Result<()> {
    let out = ec2
        .delete_launch_template_versions()
        .launch_template_id(template_id)
        .versions(version.to_string())
        .send()
        .await
        .map_err(sdk)
        .with_context(|| format!("deleting version {version} of launch template {template_id}"))?;
    if let Some(f) = out
        .unsuccessfully_deleted_launch_template_versions()
        .first()
    {
        use aws_sdk_ec2::types::LaunchTemplateErrorCode as Code;
        let code = f.response_error().and_then(|e| e.code());
        let gone = matches!(
            code,
            Some(
                Code::LaunchTemplateVersionDoesNotExist
                    | Code::LaunchTemplateIdDoesNotExist
                    | Code::LaunchTemplateNameDoesNotExist
            )
        );
        if !gone {
            let code = code.map(|c| c.as_str()).unwrap_or_default();
            anyhow::bail!(
                "deleting version {version} of launch template {template_id}: {code} {}",
                f.response_error().and_then(|e| e.message()).unwrap_or("")
            );
        }
    }
    Ok(())
}
