//! Launch template versions: resolve what an ASG runs, make a version that differs only in
//! ImageId (CreateLaunchTemplateVersion with SourceVersion: everything else is inherited
//! exactly), move the default, delete a version.

use anyhow::{Context, Result};
use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
use aws_sdk_ec2::types::RequestLaunchTemplateData;

use super::sdk;

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

/// What a version string of a template stands for now.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub template_id: String,
    pub number: i64,
    pub image_id: String,
    pub default_number: i64,
    pub latest_number: i64,
}

pub async fn resolve(ec2: &aws_sdk_ec2::Client, r: &LtRef) -> Result<Resolved> {
    let what = r.describe();
    let mut q = ec2.describe_launch_templates();
    q = match (&r.id, &r.name) {
        (Some(id), _) => q.launch_template_ids(id),
        (None, Some(n)) => q.launch_template_names(n),
        _ => anyhow::bail!("{what}: neither id nor name"),
    };
    let t = q
        .send()
        .await
        .map_err(sdk)
        .with_context(|| format!("describing {what}"))?;
    let t = t
        .launch_templates()
        .first()
        .with_context(|| format!("{what} does not exist"))?
        .clone();
    let template_id = t.launch_template_id().unwrap_or_default().to_string();
    let v = ec2
        .describe_launch_template_versions()
        .launch_template_id(&template_id)
        .versions(&r.version)
        .send()
        .await
        .map_err(sdk)
        .with_context(|| format!("describing {what}"))?;
    let v = v
        .launch_template_versions()
        .first()
        .with_context(|| format!("{what} does not exist"))?;
    Ok(Resolved {
        number: v
            .version_number()
            .with_context(|| format!("{what}: no version number"))?,
        image_id: v
            .launch_template_data()
            .and_then(|d| d.image_id())
            .unwrap_or_default()
            .to_string(),
        default_number: t.default_version_number().unwrap_or_default(),
        latest_number: t.latest_version_number().unwrap_or_default(),
        template_id,
    })
}

/// Whether `image` is still registered in this region (an image a rollback would return to may
/// have been pruned). DescribeImages answers a deregistered id with InvalidAMIID.NotFound (or,
/// for a while, with the image in state `deregistered`).
pub async fn image_exists(ec2: &aws_sdk_ec2::Client, image: &str) -> Result<bool> {
    use aws_sdk_ec2::error::ProvideErrorMetadata;
    match ec2.describe_images().image_ids(image).send().await {
        Ok(o) => Ok(o.images().iter().any(|i| {
            i.image_id() == Some(image) && i.state().map(|s| s.as_str()) != Some("deregistered")
        })),
        Err(e)
            if matches!(
                e.code(),
                Some("InvalidAMIID.NotFound" | "InvalidAMIID.Unavailable")
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(sdk(e)).with_context(|| format!("looking up image {image}")),
    }
}

/// A new version of `template_id` copied from `source` with only ImageId changed.
pub async fn create_version(
    ec2: &aws_sdk_ec2::Client,
    template_id: &str,
    source: i64,
    image: &str,
    description: &str,
) -> Result<i64> {
    let out = ec2
        .create_launch_template_version()
        .launch_template_id(template_id)
        .source_version(source.to_string())
        .version_description(description)
        .launch_template_data(RequestLaunchTemplateData::builder().image_id(image).build())
        .send()
        .await
        .map_err(sdk)
        .with_context(|| format!("creating a version of launch template {template_id} from version {source} with image {image}"))?;
    out.launch_template_version()
        .and_then(|v| v.version_number())
        .with_context(|| {
            format!("CreateLaunchTemplateVersion on {template_id} returned no version number")
        })
}

pub async fn set_default(ec2: &aws_sdk_ec2::Client, template_id: &str, version: i64) -> Result<()> {
    ec2.modify_launch_template()
        .launch_template_id(template_id)
        .default_version(version.to_string())
        .send()
        .await
        .map_err(sdk)
        .with_context(|| {
            format!("making version {version} the default of launch template {template_id}")
        })?;
    Ok(())
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
        let code = f
            .response_error()
            .and_then(|e| e.code())
            .map(|c| c.as_str().to_string())
            .unwrap_or_default();
        if !code.contains("DoesNotExist") && !code.contains("NotFound") {
            anyhow::bail!(
                "deleting version {version} of launch template {template_id}: {code} {}",
                f.response_error().and_then(|e| e.message()).unwrap_or("")
            );
        }
    }
    Ok(())
}
