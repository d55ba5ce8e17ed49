//! CloudWatch alarms as resources a cleanup may have to delete (a deploy's ledger entries: the
//! alarms a red/black deploy copied for a new generation). Copying them is the deploy's
//! (`deploy::alarms`).

use anyhow::{Context, Result};
use aws_sdk_cloudwatch::error::ProvideErrorMetadata;

use super::error::sdk;

/// Delete alarms by name (100 per call). CloudWatch refuses the whole call (ResourceNotFound)
/// when one name does not exist: a single name already gone is fine.
pub async fn delete(cw: &aws_sdk_cloudwatch::Client, names: &[String]) -> Result<()> {
    for chunk in names.chunks(100) {
        match cw
            .delete_alarms()
            .set_alarm_names(Some(chunk.to_vec()))
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if chunk.len() == 1 && e.code() == Some("ResourceNotFound") => {}
            Err(e) => {
                return Err(sdk(e))
                    .with_context(|| format!("deleting CloudWatch alarms {}", chunk.join(", ")))
            }
        }
    }
    Ok(())
}
