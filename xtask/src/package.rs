//! `cargo xtask package`: every publishable crate packaged and built from its package alone, as `cargo publish` would (`--dry-run`: nothing is uploaded).

use anyhow::Result;

use crate::cmd::Cmd;

/// Runs `cargo publish --workspace --dry-run`: each crate's `.crate` file is made and
/// built on its own (with the workspace's other crates from a local registry), which fails
/// on a file outside the package, a missing licence or README, or metadata crates.io
/// refuses. Uncommitted changes are packaged as they are.
pub(crate) fn run() -> Result<()> {
    let root = crate::project_root();
    Cmd::cargo()
        .args(["publish", "--workspace", "--dry-run", "--allow-dirty", "--locked"])
        .dir(&root)
        .run()
}
