//! Error kinds that decide the exit code. Everything else is an `anyhow::Error` with context.

use std::fmt;

/// Bad input from the user (recipe, flags, files): exit code 2, nothing was created.
#[derive(Debug)]
pub struct InputError(pub String);

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

/// The bake was stopped by SIGINT/SIGTERM: exit code 130 after cleanup.
#[derive(Debug)]
pub struct Interrupted;

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("interrupted; everything this run made was released")
    }
}

impl std::error::Error for Interrupted {}

/// Shorthand: `return Err(input!("{file}: ..."))`.
#[macro_export]
macro_rules! input {
    ($($arg:tt)*) => { anyhow::Error::new($crate::error::InputError(format!($($arg)*))) };
}

pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_INPUT: i32 = 2;
pub const EXIT_INTERRUPTED: i32 = 130;

/// The exit code for an error chain: the first typed error found decides.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if cause.is::<InputError>() {
            return EXIT_INPUT;
        }
        if cause.is::<Interrupted>() {
            return EXIT_INTERRUPTED;
        }
    }
    EXIT_FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn exit_codes_follow_the_typed_cause() {
        let e: anyhow::Error = input!("recipe.yaml: unknown key `bse`");
        assert_eq!(exit_code(&e), EXIT_INPUT);
        let wrapped = Err::<(), _>(e).context("baking").unwrap_err();
        assert_eq!(exit_code(&wrapped), EXIT_INPUT);
        assert_eq!(
            exit_code(&anyhow::Error::new(Interrupted)),
            EXIT_INTERRUPTED
        );
        assert_eq!(exit_code(&anyhow::anyhow!("mount failed")), EXIT_FAILURE);
    }
}
