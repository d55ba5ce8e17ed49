//! What every command shares, in one place: the global flags, the one tokio runtime (built once,
//! lazily, only by commands that talk to AWS), the AWS context, region and account checks,
//! `which`, and who is baking (`creator`). Command modules (bake, base, gc, images, deploy,
//! doctor, boot) import this, never each other.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result};

use crate::aws::client::AwsContext;
use crate::input;

/// Global options every command shares (`-v`, `-q`, `--work-dir`).
#[derive(Debug, Clone)]
pub struct Globals {
    /// Work files, logs, cached bases and snapshots live under it.
    pub work_dir: PathBuf,
    pub verbose: u8,
    pub quiet: bool,
}

/// Worker threads of the runtime: AWS calls are I/O bound; uploads bound their own concurrency.
const WORKERS: usize = 4;

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

/// The process's one tokio runtime, built on first use. Local bakes never build it; the chroot
/// session child never does either (it is a re-exec, not a fork).
pub fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // A racing first call may have won: use whichever got in.
    Ok(RUNTIME.get_or_init(|| rt))
}

/// The runtime and the AWS context (credential chain, endpoint, retries) a command works with.
pub struct Aws {
    pub rt: &'static tokio::runtime::Runtime,
    pub ctx: AwsContext,
}

impl Aws {
    /// Load the AWS configuration; with `require_credentials`, fail as an input error (exit 2)
    /// when the standard chain finds none, before anything is made.
    pub fn load(require_credentials: bool) -> Result<Aws> {
        let rt = runtime()?;
        let ctx = rt.block_on(AwsContext::load());
        if require_credentials {
            rt.block_on(ctx.require_credentials())?;
        }
        Ok(Aws { rt, ctx })
    }

    /// The region from the flag, else the environment/profile (input error when neither says).
    pub fn region(&self, flag: Option<&str>) -> Result<String> {
        self.ctx.region(flag)
    }
}

/// AWS region names: `us-east-1`, `eu-west-3`, `us-gov-west-1`, `ap-southeast-4` (two
/// lowercase letters, one or more lowercase words, a number; AWS General Reference, "Regions").
pub fn is_region_name(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[0].chars().all(|c| c.is_ascii_lowercase())
        && parts[1..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].parse::<u8>().is_ok()
}

/// Every region must look like one; the error names the flags it came from (`flags`, e.g.
/// `--region/--copy-to`). Input error (exit 2).
pub fn check_regions<'a>(regions: impl IntoIterator<Item = &'a String>, flags: &str) -> Result<()> {
    for r in regions {
        if !is_region_name(r) {
            return Err(input!(
                "region `{r}` is not an AWS region name (like us-east-1); check {flags}"
            ));
        }
    }
    Ok(())
}

/// AWS account ids are 12 digits (`--share-with`). Input error (exit 2).
pub fn check_account_ids(ids: &[String]) -> Result<()> {
    for a in ids {
        if a.len() != 12 || !a.chars().all(|c| c.is_ascii_digit()) {
            return Err(input!("--share-with `{a}`: an AWS account id is 12 digits"));
        }
    }
    Ok(())
}

/// An executable file named `tool` on PATH, else in /usr/sbin or /sbin (which a non-login
/// root's PATH may lack).
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Who baked (the `creator` tag, as Aminator sets it): the user behind sudo, else the login
/// user, else the effective user's name.
pub fn creator(env: &BTreeMap<String, String>) -> String {
    env.get("SUDO_USER")
        .or_else(|| env.get("USER"))
        .filter(|u| !u.is_empty())
        .cloned()
        .unwrap_or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::geteuid())
                .ok()
                .flatten()
                .map(|u| u.name)
                .unwrap_or_else(|| "bakery".into())
        })
}

/// The process environment as a map (tags read CI variables and the user from it).
pub fn env_map() -> BTreeMap<String, String> {
    std::env::vars().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names() {
        for ok in ["us-east-1", "eu-west-3", "us-gov-west-1", "ap-southeast-4"] {
            assert!(is_region_name(ok), "{ok}");
        }
        for bad in ["us-east", "useast1", "US-EAST-1", "mars-north-1x", ""] {
            assert!(!is_region_name(bad), "{bad}");
        }
        let e =
            check_regions(&["us-east-1".to_string(), "moon".to_string()], "--copy-to").unwrap_err();
        assert_eq!(crate::error::exit_code(&e), crate::error::EXIT_INPUT);
        assert!(e.to_string().contains("`moon`") && e.to_string().contains("--copy-to"));
    }

    #[test]
    fn account_ids_are_twelve_digits() {
        assert!(check_account_ids(&["123456789012".into()]).is_ok());
        assert!(check_account_ids(&["12345".into()]).is_err());
        assert!(check_account_ids(&["12345678901x".into()]).is_err());
    }

    #[test]
    fn creator_prefers_the_sudo_user() {
        let env = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            creator(&env(&[("USER", "root"), ("SUDO_USER", "alice")])),
            "alice"
        );
        assert_eq!(creator(&env(&[("USER", "bob")])), "bob");
        assert!(!creator(&env(&[])).is_empty());
    }

    #[test]
    fn which_finds_sh() {
        assert!(which("sh").is_some());
        assert!(which("no-such-tool-bakery").is_none());
    }

    #[test]
    fn the_runtime_is_built_once() {
        let a = runtime().unwrap() as *const _;
        let b = runtime().unwrap() as *const _;
        assert_eq!(a, b);
    }
}
