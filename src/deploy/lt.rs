//! Launch template versions: resolve what an ASG runs, make a version that differs only in
//! ImageId (CreateLaunchTemplateVersion with SourceVersion: everything else is inherited
//! exactly), move the default, delete a version.

use anyhow::{Context, Result};
use aws_sdk_ec2::types::RequestLaunchTemplateData;

use super::sdk;
pub use crate::aws::launch_template::{delete_version, LtRef};

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
