//! Where a plugin named in a recipe or `--plugin NAME` lives on disk.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::input;

/// The prefix a plugin on `PATH` carries: `bakery-plugin-NAME`.
pub const PATH_PREFIX: &str = "bakery-plugin-";

/// Find plugin `name`: `extra_dirs/NAME` in order, `./plugins/NAME`,
/// `<dir of the bakery executable>/../share/bakery/plugins/NAME`,
/// `/usr/local/share/bakery/plugins/NAME`, `/usr/share/bakery/plugins/NAME`, then
/// `bakery-plugin-NAME` on `PATH`. The first executable file wins.
pub fn find(name: &str, extra_dirs: &[PathBuf]) -> Result<PathBuf> {
    find_in(
        name,
        &search_dirs(extra_dirs),
        std::env::var_os("PATH").as_deref(),
    )
}

/// The directories searched before `PATH`, in order.
pub fn search_dirs(extra_dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs = extra_dirs.to_vec();
    dirs.push(PathBuf::from("plugins"));
    if let Some(bin_dir) = std::env::current_exe()
        .ok()
        .as_deref()
        .and_then(Path::parent)
    {
        dirs.push(bin_dir.join("../share/bakery/plugins"));
    }
    dirs.push(PathBuf::from("/usr/local/share/bakery/plugins"));
    dirs.push(PathBuf::from("/usr/share/bakery/plugins"));
    dirs
}

/// [`find`] over explicit directories and `PATH` value (the testable part).
pub fn find_in(name: &str, dirs: &[PathBuf], path_var: Option<&OsStr>) -> Result<PathBuf> {
    check_name(name)?;
    let mut not_executable = Vec::new();
    let mut consider = |candidate: PathBuf| -> Option<PathBuf> {
        match std::fs::metadata(&candidate) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Some(candidate),
            Ok(m) if m.is_file() => {
                not_executable.push(candidate);
                None
            }
            _ => None,
        }
    };
    for dir in dirs {
        if let Some(found) = consider(dir.join(name)) {
            return Ok(found);
        }
    }
    let on_path = format!("{PATH_PREFIX}{name}");
    for dir in path_var
        .map(|p| std::env::split_paths(p).collect::<Vec<_>>())
        .unwrap_or_default()
    {
        if dir.as_os_str().is_empty() {
            continue;
        }
        if let Some(found) = consider(dir.join(&on_path)) {
            return Ok(found);
        }
    }
    let looked = dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let hint = match not_executable.first() {
        Some(p) => format!("{} exists but is not executable (chmod +x it)", p.display()),
        None => format!(
            "install it into one of those directories, put `{on_path}` on PATH, or check the name"
        ),
    };
    Err(input!(
        "plugin `{name}`: not found in {looked}, or on PATH as `{on_path}`; {hint}"
    ))
}

/// A plugin name is one path component: no `/`, not empty, not hidden.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(input!("plugin name `{name}` is not valid; use letters, digits, `-`, `_` and `.` (e.g. `notify-webhook`)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(path: &Path, mode: u32) {
        fs::write(path, "#!/bin/sh\n").unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn the_first_executable_in_search_order_wins() {
        let t = tempfile::tempdir().unwrap();
        let (a, b, bin) = (t.path().join("a"), t.path().join("b"), t.path().join("bin"));
        for d in [&a, &b, &bin] {
            fs::create_dir(d).unwrap();
        }
        write(&b.join("notify"), 0o755);
        write(&bin.join("bakery-plugin-notify"), 0o755);
        write(&bin.join("bakery-plugin-only-on-path"), 0o755);
        let dirs = vec![a.clone(), b.clone()];
        let path = std::env::join_paths([&bin]).unwrap();
        assert_eq!(
            find_in("notify", &dirs, Some(&path)).unwrap(),
            b.join("notify")
        );
        write(&a.join("notify"), 0o700);
        assert_eq!(
            find_in("notify", &dirs, Some(&path)).unwrap(),
            a.join("notify")
        );
        assert_eq!(
            find_in("only-on-path", &dirs, Some(&path)).unwrap(),
            bin.join("bakery-plugin-only-on-path")
        );
    }

    #[test]
    fn not_found_names_where_it_looked_and_is_an_input_error() {
        let t = tempfile::tempdir().unwrap();
        write(&t.path().join("plain"), 0o644);
        let dirs = vec![t.path().to_path_buf()];
        let e = find_in("missing", &dirs, None).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("plugin `missing`: not found in "), "{msg}");
        assert!(
            msg.contains(&t.path().display().to_string()) && msg.contains("bakery-plugin-missing"),
            "{msg}"
        );
        assert_eq!(crate::error::exit_code(&e), crate::error::EXIT_INPUT);
        let msg = find_in("plain", &dirs, None).unwrap_err().to_string();
        assert!(msg.contains("not executable"), "{msg}");
    }

    #[test]
    fn names_must_be_one_path_component() {
        for bad in ["", "../x", "a/b", ".hidden", "a b"] {
            assert!(find_in(bad, &[], None).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn search_order_ends_with_the_system_directories() {
        let dirs = search_dirs(&[PathBuf::from("/extra")]);
        assert_eq!(dirs[0], PathBuf::from("/extra"));
        assert_eq!(dirs[1], PathBuf::from("plugins"));
        assert!(dirs[2].ends_with("../share/bakery/plugins"));
        assert_eq!(
            &dirs[dirs.len() - 2..],
            [
                PathBuf::from("/usr/local/share/bakery/plugins"),
                PathBuf::from("/usr/share/bakery/plugins")
            ]
        );
    }
}
