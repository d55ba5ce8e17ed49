//! The cloud-init NoCloud seed: a small volume labelled `cidata` holding `meta-data` and
//! `user-data`, built with userspace tools (no loop mount, no vfat module needed).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `meta-data`: a fresh instance id makes cloud-init run its per-instance modules again, even
/// if the image was booted before.
pub fn meta_data(instance_id: &str, hostname: &str) -> String {
    format!("instance-id: {instance_id}\nlocal-hostname: {hostname}\n")
}

/// `user-data` (#cloud-config): hostname, and the SSH key for the default user and root.
pub fn user_data(hostname: &str, ssh_key: Option<&str>) -> String {
    let mut s = String::from("#cloud-config\n");
    s += &format!("hostname: {}\n", yaml_str(hostname));
    s += "preserve_hostname: false\n";
    if let Some(key) = ssh_key {
        // disable_root: false makes cloud-init install the keys for root as well.
        s += "disable_root: false\n";
        s += &format!("ssh_authorized_keys:\n  - {}\n", yaml_str(key.trim()));
    }
    s
}

/// A double-quoted YAML scalar.
fn yaml_str(s: &str) -> String {
    let escaped: String = s
        .chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            c => vec![c],
        })
        .collect();
    format!("\"{escaped}\"")
}

/// Is `s` a valid hostname label sequence (RFC 1123)?
pub fn valid_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Tools that can write the seed volume, in order of preference.
const TOOLS: &[&str] = &["genisoimage", "xorriso", "mkfs.vfat"];

/// Write the seed volume into `dir` (which receives a `seed-src/` directory too) and return
/// its path.
pub fn build(dir: &Path, meta: &str, user: &str) -> Result<PathBuf> {
    let src = dir.join("seed-src");
    std::fs::create_dir_all(&src).with_context(|| format!("creating {}", src.display()))?;
    std::fs::write(src.join("meta-data"), meta).context("writing seed meta-data")?;
    std::fs::write(src.join("user-data"), user).context("writing seed user-data")?;
    let out = dir.join("seed.img");
    let tool = TOOLS.iter().copied().find(|t| which(t).is_some());
    let Some(tool) = tool else {
        bail!(
            "no tool to write the cloud-init seed (looked for {}); install genisoimage",
            TOOLS.join(", ")
        )
    };
    let files = [src.join("meta-data"), src.join("user-data")];
    match tool {
        "genisoimage" => run(Command::new("genisoimage")
            .args(["-quiet", "-output"])
            .arg(&out)
            .args(["-volid", "cidata", "-joliet", "-rock"])
            .args(&files))?,
        "xorriso" => run(Command::new("xorriso")
            .args(["-as", "mkisofs", "-quiet", "-output"])
            .arg(&out)
            .args(["-volid", "cidata", "-joliet", "-rock"])
            .args(&files))?,
        _ => {
            if which("mcopy").is_none() {
                bail!("mkfs.vfat needs mcopy (mtools) to write the seed; install genisoimage");
            }
            let f = std::fs::File::create(&out).context("creating seed image")?;
            f.set_len(2 * 1024 * 1024).context("sizing seed image")?;
            drop(f);
            run(Command::new("mkfs.vfat").args(["-n", "CIDATA"]).arg(&out))?;
            run(Command::new("mcopy")
                .arg("-i")
                .arg(&out)
                .args(&files)
                .arg("::"))?;
        }
    }
    Ok(out)
}

fn run(cmd: &mut Command) -> Result<()> {
    let name = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().with_context(|| format!("running {name}"))?;
    if !out.status.success() {
        bail!(
            "{name} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

pub use crate::context::which;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_documents() {
        assert_eq!(
            meta_data("bakery-1234", "web-1"),
            "instance-id: bakery-1234\nlocal-hostname: web-1\n"
        );
        let u = user_data("web-1", None);
        assert!(u.starts_with("#cloud-config\n"));
        assert!(u.contains("hostname: \"web-1\"\n"));
        assert!(!u.contains("ssh_authorized_keys"));
        let u = user_data("web-1", Some("ssh-ed25519 AAAA me@\"x\"\n"));
        assert!(u.contains("disable_root: false\n"));
        assert!(
            u.contains("ssh_authorized_keys:\n  - \"ssh-ed25519 AAAA me@\\\"x\\\"\"\n"),
            "{u}"
        );
    }

    #[test]
    fn hostnames() {
        assert!(valid_hostname("bakery-boot"));
        assert!(valid_hostname("a.b-c.d1"));
        for bad in ["", "-a", "a-", "a_b", "a..b", "a b", &"x".repeat(64)] {
            assert!(!valid_hostname(bad), "{bad}");
        }
    }

    #[test]
    fn builds_an_iso_labelled_cidata() {
        if which("genisoimage").is_none() && which("xorriso").is_none() {
            eprintln!("skipping: no genisoimage/xorriso");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let img = build(dir.path(), &meta_data("i-1", "h"), &user_data("h", None)).unwrap();
        let bytes = std::fs::read(&img).unwrap();
        // ISO 9660 primary volume descriptor at sector 16: "CD001", volume id at offset 40.
        let pvd = &bytes[16 * 2048..17 * 2048];
        assert_eq!(&pvd[1..6], b"CD001");
        assert_eq!(std::str::from_utf8(&pvd[40..46]).unwrap(), "cidata");
        let hay = String::from_utf8_lossy(&bytes);
        assert!(hay.contains("local-hostname: h"));
    }
}
