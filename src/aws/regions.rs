//! Regions checked against the account's region list (EC2 DescribeRegions with `AllRegions`)
//! before a bake makes anything: a misspelt or unknown `--copy-to` region used to be found only
//! at CopyImage, after the whole bake.

use anyhow::Result;

use crate::aws::client::{describe_sdk_error, AwsContext};
use crate::input;

/// A region the account cannot use, as found by [`check_known`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionError {
    #[error("region `{0}` is not one of this account's {1} regions (DescribeRegions does not list it); check --region/--copy-to")]
    Unknown(String, usize),
    #[error("region `{0}` is not enabled for this account (opt-in status: not-opted-in); enable it in the AWS console (Account → AWS Regions) or drop it from --region/--copy-to")]
    NotOptedIn(String),
}

/// Check each of `wanted` against the account's regions: `(name, opt-in status)` as
/// DescribeRegions returns them (`opt-in-not-required`, `opted-in`, `not-opted-in`; AWS EC2 API
/// reference, `Region.OptInStatus`). The first failure, in the order given.
pub fn check_known(
    wanted: &[String],
    known: &[(String, Option<String>)],
) -> Result<(), RegionError> {
    for w in wanted {
        match known.iter().find(|(n, _)| n == w) {
            None => return Err(RegionError::Unknown(w.clone(), known.len())),
            Some((_, Some(s))) if s == "not-opted-in" => {
                return Err(RegionError::NotOptedIn(w.clone()))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// DescribeRegions (all regions, opted in or not) in `region`, then [`check_known`]: an input
/// error (exit 2) naming the region. A failed DescribeRegions is a run-time error.
pub async fn check_regions_exist(ctx: &AwsContext, region: &str, wanted: &[String]) -> Result<()> {
    let out = ctx
        .ec2(region)
        .describe_regions()
        .all_regions(true)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("DescribeRegions in {region}: {}", describe_sdk_error(&e)))?;
    let known: Vec<(String, Option<String>)> = out
        .regions()
        .iter()
        .filter_map(|r| {
            Some((
                r.region_name()?.to_string(),
                r.opt_in_status().map(str::to_string),
            ))
        })
        .collect();
    check_known(wanted, &known).map_err(|e| input!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_not_opted_in_regions_are_refused_by_name() {
        let known = vec![
            (
                "us-east-1".to_string(),
                Some("opt-in-not-required".to_string()),
            ),
            ("eu-west-1".to_string(), None),
            ("af-south-1".to_string(), Some("not-opted-in".to_string())),
            ("me-south-1".to_string(), Some("opted-in".to_string())),
        ];
        let ok = ["us-east-1", "eu-west-1", "me-south-1"].map(String::from);
        assert_eq!(check_known(&ok, &known), Ok(()));
        let e = check_known(&["us-east-1".into(), "us-west-9".into()], &known).unwrap_err();
        assert!(
            matches!(&e, RegionError::Unknown(r, _) if r == "us-west-9"),
            "{e}"
        );
        assert!(e.to_string().contains("us-west-9"));
        assert_eq!(
            check_known(&["af-south-1".into()], &known),
            Err(RegionError::NotOptedIn("af-south-1".into()))
        );
    }
}
