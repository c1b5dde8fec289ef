//! `cargo xtask package`: every publishable crate packaged and built from its package alone, as `cargo publish` would (`--dry-run`: nothing is uploaded).

use std::{
    env, fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use crate::cmd::Cmd;

/// Runs `cargo publish --workspace --dry-run`: each crate's `.crate` file is made and
/// built on its own (with the workspace's other crates from a local registry), which fails
/// on a file outside the package, a missing licence or README, or metadata crates.io
/// refuses. Uncommitted changes are packaged as they are.
///
/// The builds go to a target directory of their own, `target/package-verify`: cargo takes
/// the packaged crates for registry crates, whose sources never change for a version, so in
/// the workspace's directory it would reuse what an earlier run built from older sources.
pub(crate) fn run() -> Result<()> {
    let root = crate::project_root();
    let target = env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("package-verify");
    forget_earlier_packages(&target)?;
    Cmd::cargo()
        .args(["publish", "--workspace", "--dry-run", "--allow-dirty", "--locked"])
        .env("CARGO_TARGET_DIR", target.to_string_lossy())
        .dir(&root)
        .run()
}

/// Deletes what earlier dry runs left of ucm's own crates (named `ucm*`), which cargo
/// would otherwise take as current for the same version: their builds in `target`, and
/// their sources as unpacked from the temporary local registry under
/// `$CARGO_HOME/registry/src/<registry>/` (crates.io's directories are left alone).
fn forget_earlier_packages(target: &Path) -> Result<()> {
    for dir in ["debug/deps", "debug/.fingerprint", "debug/build", "debug/incremental"] {
        remove_ucm_entries(&target.join(dir))?;
    }
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    let Ok(registries) = fs::read_dir(cargo_home.join("registry/src")) else { return Ok(()) };
    for registry in registries.flatten() {
        if !registry.file_name().to_string_lossy().starts_with("index.") {
            remove_ucm_entries(&registry.path())?;
        }
    }
    Ok(())
}

/// Removes every entry of `dir` whose name starts with `ucm` or `libucm`; nothing when
/// `dir` does not exist.
fn remove_ucm_entries(dir: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(dir) else { return Ok(()) };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("ucm") || name.starts_with("libucm") {
            let path = entry.path();
            let removed =
                if path.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
            removed.with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}
