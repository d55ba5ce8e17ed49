//! AWS errors, classified by the error code the service returned
//! (`ProvideErrorMetadata::code()`), never by the text of its message: messages are for people
//! and change without notice; codes are part of the API (EC2 API reference, "Error codes").
//!
//! [`code`] reads the code of an SDK error; [`AwsError`] carries it through `anyhow` so a caller
//! several frames up can still branch on it ([`code_of`]); the predicates name the classes
//! bakery acts on.

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};

/// The service's error code of an SDK error (`InvalidAMIName.Duplicate`, ...); None when the
/// call never got an answer (dispatch failure, timeout, construction failure).
pub fn code<E, R>(e: &SdkError<E, R>) -> Option<&str>
where
    E: ProvideErrorMetadata,
{
    e.code()
}

/// An AWS call that failed: the service's code (when it answered) and bakery's one-line
/// description. Wrap SDK errors in it where a caller may branch on the code.
#[derive(Debug, thiserror::Error)]
#[error("{description}")]
pub struct AwsError {
    pub code: Option<String>,
    pub description: String,
}

impl AwsError {
    pub fn from_sdk<E, R>(e: &SdkError<E, R>) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        AwsError {
            code: code(e).map(str::to_string),
            description: super::client::describe_sdk_error(e),
        }
    }
}

/// An SDK error as an `anyhow` error that keeps its code (for `map_err`).
pub fn sdk<E, R>(e: SdkError<E, R>) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    anyhow::Error::new(AwsError::from_sdk(&e))
}

/// The AWS error code anywhere in an error chain (an [`AwsError`] wrapped in context).
pub fn code_of(e: &anyhow::Error) -> Option<&str> {
    e.chain()
        .find_map(|c| c.downcast_ref::<AwsError>())
        .and_then(|a| a.code.as_deref())
}

/// The resource does not exist (any more): `InvalidAMIID.NotFound`, `InvalidSnapshot.NotFound`,
/// `InvalidVolume.NotFound`, `InvalidLaunchTemplateId.NotFound`, ..., and
/// `InvalidAMIID.Unavailable` (a deregistered image).
pub fn is_not_found(code: &str) -> bool {
    code.ends_with(".NotFound") || code == "InvalidAMIID.Unavailable"
}

/// An AMI id that names no image here: not found, deregistered, or not an id at all
/// (`InvalidAMIID.Malformed`): for a user's `--base`/`--image`, all mean "no such AMI".
pub fn is_unknown_ami(code: &str) -> bool {
    code.starts_with("InvalidAMIID.")
}

/// Nothing left to delete: not found, or an id AWS cannot parse (`*.Malformed`) — bakery only
/// deletes ids AWS gave it, so such an id names nothing.
pub fn is_already_gone(code: &str) -> bool {
    is_not_found(code) || code.ends_with(".Malformed")
}

/// RegisterImage/CopyImage: the account already has an AMI of that name in the region (AMI
/// names are unique per account and region).
pub fn is_duplicate_ami_name(code: &str) -> bool {
    code == "InvalidAMIName.Duplicate"
}

/// The endpoint does not implement the action (e.g. instance refresh on an emulator).
pub fn is_invalid_action(code: &str) -> bool {
    code == "InvalidAction"
}

/// The resource is not in a state the call allows (e.g. DetachVolume of a detached volume).
pub fn is_incorrect_state(code: &str) -> bool {
    code == "IncorrectState"
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::error::ErrorMetadata;

    fn service_error(code: &str) -> SdkError<ErrorMetadata, ()> {
        SdkError::service_error(
            ErrorMetadata::builder()
                .code(code)
                .message("a message that may say anything, e.g. NotFound")
                .build(),
            (),
        )
    }

    #[test]
    fn classes_follow_the_code_not_the_message() {
        assert!(is_not_found("InvalidSnapshot.NotFound"));
        assert!(is_not_found("InvalidAMIID.Unavailable"));
        assert!(!is_not_found("InvalidAMIID.Malformed"));
        assert!(is_already_gone("InvalidAMIID.Malformed"));
        assert!(is_unknown_ami("InvalidAMIID.Malformed"));
        assert!(!is_unknown_ami("InvalidSnapshot.NotFound"));
        assert!(is_duplicate_ami_name("InvalidAMIName.Duplicate"));
        assert!(!is_duplicate_ami_name("InvalidAMIName.Malformed"));
        assert!(is_invalid_action("InvalidAction"));
        assert!(is_incorrect_state("IncorrectState"));
        // The message mentions NotFound; the code decides.
        let e = service_error("UnauthorizedOperation");
        assert_eq!(code(&e), Some("UnauthorizedOperation"));
        assert!(!is_not_found(code(&e).unwrap()));
    }

    #[test]
    fn the_code_survives_anyhow_context() {
        let e = service_error("InvalidAction");
        let a = anyhow::Error::new(AwsError {
            code: code(&e).map(str::to_string),
            description: "InvalidAction: not here".into(),
        })
        .context("starting an instance refresh");
        assert_eq!(code_of(&a), Some("InvalidAction"));
        assert_eq!(code_of(&anyhow::anyhow!("InvalidAction")), None);
    }
}
