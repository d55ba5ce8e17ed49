//! Lifecycle settings of a baked AMI, set in every region after it is registered or copied
//! (CopyImage carries neither): deprecation (EnableImageDeprecation: the image disappears from
//! DescribeImages listings of other accounts and from launch wizards after the time, but still
//! launches) and deregistration protection (EnableImageDeregistrationProtection: DeregisterImage
//! fails until it is disabled, and for 24 h after that when enabled "with cooldown").
//!
//! Unlike the launch attributes these are never inherited from the base: a base's deprecation
//! time says when the base goes stale, not the image baked on it.

use anyhow::Result;
use aws_smithy_types::date_time::Format;
use aws_smithy_types::DateTime;
use tracing::info;

use super::attributes::Protection;
use crate::aws::error::sdk;

/// Deprecation and deregistration protection for every regional AMI of a bake.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lifecycle {
    pub deprecate_at: Option<DateTime>,
    pub protection: Option<Protection>,
}

impl Lifecycle {
    /// Deregistration protection is asked for (on, or on with cooldown).
    pub fn protects(&self) -> Option<bool> {
        match self.protection {
            Some(Protection::On) => Some(false),
            Some(Protection::WithCooldown) => Some(true),
            Some(Protection::Off) | None => None,
        }
    }
}

/// AWS's upper bound for DeprecateAt: 10 years from now (EnableImageDeprecation).
const MAX_AHEAD_SECS: i64 = 3652 * 86400;

/// `--deprecate-at`/`--deprecate-in` that AWS would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeprecationError {
    #[error("give either --deprecate-at or --deprecate-in, not both")]
    Both,
    #[error(
        "--deprecate-at `{0}`: not a time; write it as RFC 3339 UTC, e.g. 2027-06-30T00:00:00Z"
    )]
    NotATime(String),
    #[error("--deprecate-in `{0}`: not a duration; write it like 90d, 12weeks or 1y")]
    NotADuration(String),
    #[error("--deprecate-at {0} is in the past; AWS deprecates only at a future time")]
    InThePast(String),
    #[error("deprecation at {0} is more than 10 years ahead, AWS's limit")]
    TooFar(String),
}

/// The deprecation time from `--deprecate-at TIME` (RFC 3339) or `--deprecate-in DURATION`
/// (humantime: `90d`, `12weeks`, `1y`) counted from `now_secs` (Unix seconds, the bake's
/// start), checked against AWS's bounds: in the future, at most 10 years ahead.
pub fn deprecation_time(
    at: Option<&str>,
    within: Option<&str>,
    now_secs: i64,
) -> Result<Option<DateTime>, DeprecationError> {
    let t = match (at, within) {
        (Some(_), Some(_)) => return Err(DeprecationError::Both),
        (None, None) => return Ok(None),
        (Some(a), None) => DateTime::from_str(a.trim(), Format::DateTime)
            .map_err(|_| DeprecationError::NotATime(a.to_string()))?,
        (None, Some(d)) => {
            let dur = humantime::parse_duration(d.trim())
                .map_err(|_| DeprecationError::NotADuration(d.to_string()))?;
            let secs = i64::try_from(dur.as_secs())
                .map_err(|_| DeprecationError::NotADuration(d.to_string()))?;
            DateTime::from_secs(now_secs.saturating_add(secs))
        }
    };
    let shown = t
        .fmt(Format::DateTime)
        .unwrap_or_else(|_| t.secs().to_string());
    if t.secs() <= now_secs {
        return Err(DeprecationError::InThePast(shown));
    }
    if t.secs() - now_secs > MAX_AHEAD_SECS {
        return Err(DeprecationError::TooFar(shown));
    }
    Ok(Some(t))
}

/// EnableImageDeprecation on one image.
pub async fn deprecate(
    ec2: &aws_sdk_ec2::Client,
    region: &str,
    image_id: &str,
    at: DateTime,
) -> Result<()> {
    ec2.enable_image_deprecation()
        .image_id(image_id)
        .deprecate_at(at)
        .send()
        .await
        .map_err(|e| sdk(e).context(format!("deprecating {image_id} in {region}")))?;
    info!(
        "{image_id} in {region} deprecates at {}",
        at.fmt(Format::DateTime).unwrap_or_default()
    );
    Ok(())
}

/// EnableImageDeregistrationProtection on one image.
pub async fn protect(
    ec2: &aws_sdk_ec2::Client,
    region: &str,
    image_id: &str,
    with_cooldown: bool,
) -> Result<()> {
    ec2.enable_image_deregistration_protection()
        .image_id(image_id)
        .with_cooldown(with_cooldown)
        .send()
        .await
        .map_err(|e| {
            sdk(e).context(format!(
                "enabling deregistration protection of {image_id} in {region}"
            ))
        })?;
    info!("{image_id} in {region} is protected from deregistration");
    Ok(())
}

/// DisableImageDeregistrationProtection on one image (a rollback, or `gc`, removing it).
pub async fn unprotect(ec2: &aws_sdk_ec2::Client, region: &str, image_id: &str) -> Result<()> {
    ec2.disable_image_deregistration_protection()
        .image_id(image_id)
        .send()
        .await
        .map_err(|e| {
            sdk(e).context(format!(
                "disabling deregistration protection of {image_id} in {region}"
            ))
        })?;
    Ok(())
}

/// DeregisterImage was refused for `image_id`: if deregistration protection is why, disable it
/// and deregister again. `None` when the image is not protected (the refusal has another
/// cause: the caller reports it); otherwise the outcome of the second attempt. A protection
/// enabled with cooldown keeps the image for 24 hours: that is reported, not waited for.
pub async fn deregister_protected(
    ec2: &aws_sdk_ec2::Client,
    region: &str,
    image_id: &str,
) -> Option<Result<()>> {
    let out = ec2
        .describe_images()
        .image_ids(image_id)
        .send()
        .await
        .ok()?;
    let state = out
        .images()
        .first()?
        .deregistration_protection()
        .map(str::to_string);
    if !is_protected(state.as_deref()) {
        return None;
    }
    let again = async {
        unprotect(ec2, region, image_id).await?;
        ec2.deregister_image()
            .image_id(image_id)
            .send()
            .await
            .map_err(|e| {
                sdk(e).context(format!(
                    "deregistering {image_id} in {region} (deregistration protection was {}; with a cooldown AWS keeps it 24 h after it is disabled)",
                    state.as_deref().unwrap_or("on")
                ))
            })?;
        info!("{image_id} in {region}: deregistration protection lifted, deregistered");
        Ok(())
    };
    Some(again.await)
}

/// Is the image protected from deregistration now (DescribeImages' DeregistrationProtection:
/// `enabled-...`, or `disabled-until ...` during a cooldown)?
pub fn is_protected(state: Option<&str>) -> bool {
    state.is_some_and(|s| s.starts_with("enabled") || s.starts_with("disabled-until"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_000_000; // 2026-11-19

    #[test]
    fn deprecation_is_a_future_time_within_ten_years() {
        assert_eq!(deprecation_time(None, None, NOW), Ok(None));
        let t = deprecation_time(None, Some("90d"), NOW).unwrap().unwrap();
        assert_eq!(t.secs(), NOW + 90 * 86400);
        let t = deprecation_time(None, Some("2weeks"), NOW)
            .unwrap()
            .unwrap();
        assert_eq!(t.secs(), NOW + 14 * 86400);
        let t = deprecation_time(Some("2027-06-30T00:00:00Z"), None, NOW)
            .unwrap()
            .unwrap();
        assert_eq!(t.fmt(Format::DateTime).unwrap(), "2027-06-30T00:00:00Z");
        assert_eq!(
            deprecation_time(Some("2020-01-01T00:00:00Z"), None, NOW),
            Err(DeprecationError::InThePast("2020-01-01T00:00:00Z".into()))
        );
        assert!(matches!(
            deprecation_time(None, Some("11y"), NOW),
            Err(DeprecationError::TooFar(_))
        ));
        assert!(matches!(
            deprecation_time(Some("tomorrow"), None, NOW),
            Err(DeprecationError::NotATime(_))
        ));
        assert!(matches!(
            deprecation_time(None, Some("soon"), NOW),
            Err(DeprecationError::NotADuration(_))
        ));
        assert_eq!(
            deprecation_time(Some("2027-06-30T00:00:00Z"), Some("1d"), NOW),
            Err(DeprecationError::Both)
        );
    }

    #[test]
    fn protection_states_as_aws_reports_them() {
        assert!(is_protected(Some("enabled-without-cooldown")));
        assert!(is_protected(Some("enabled-with-cooldown")));
        assert!(is_protected(Some(
            "disabled-until 2026-12-01T00:00:00.000Z"
        )));
        assert!(!is_protected(Some("disabled")));
        assert!(!is_protected(None));
        let l = Lifecycle {
            protection: Some(Protection::WithCooldown),
            ..Default::default()
        };
        assert_eq!(l.protects(), Some(true));
        assert_eq!(Lifecycle::default().protects(), None);
    }
}
