//! Launch template versions as resources a cleanup may have to delete (a deploy's ledger
//! entries). Making and resolving versions is the deploy's (`deploy::lt`).

use anyhow::{Context, Result};

use super::error::sdk;

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
