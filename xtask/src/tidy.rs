//! `cargo xtask tidy`: formatting, clippy, doc links, the `//!` header on every file, no import cycle between core's modules, and `ucm`'s export list.

mod exports;
mod module_cycles;

use std::{env, fs, path::Path};

use anyhow::{Result, bail};

use crate::cmd::Cmd;

/// Runs every check, even after one fails, then fails naming the checks that did.
pub(crate) fn run() -> Result<()> {
    let root = crate::project_root();
    let rustdocflags = match env::var("RUSTDOCFLAGS") {
        Ok(flags) if !flags.trim().is_empty() => format!("{flags} -D warnings"),
        _ => "-D warnings".to_owned(),
    };
    let commands = [
        ("fmt", Cmd::cargo().args(["fmt", "--all", "--", "--check"])),
        (
            "clippy",
            Cmd::cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]),
        ),
        // `-D warnings` turns broken intra-doc links into errors.
        (
            "doc",
            Cmd::cargo()
                .args(["doc", "--workspace", "--no-deps"])
                .env("RUSTDOCFLAGS", rustdocflags),
        ),
    ];
    let mut failed = Vec::new();
    let mut record = |name: &'static str, result: Result<()>| {
        if let Err(e) = result {
            eprintln!("error: {e:#}");
            failed.push(name);
        }
    };
    for (name, cmd) in commands {
        eprintln!("\n== tidy: {name} ==");
        record(name, cmd.dir(&root).run());
    }
    eprintln!("\n== tidy: file headers ==");
    record("file headers", check_file_headers(&root));
    eprintln!("\n== tidy: core module cycles ==");
    record("core module cycles", module_cycles::check(&root.join("core/src")));
    eprintln!("\n== tidy: ucm's export list ==");
    record("export list", exports::check(&root.join("adapters/src/lib.rs")));
    if !failed.is_empty() {
        bail!("tidy failed: {}", failed.join(", "));
    }
    eprintln!("\ntidy: all checks passed");
    Ok(())
}

/// Checks that every Rust file git knows of (tracked, or new and not ignored) starts with a
/// `//!` line saying what it is for.
fn check_file_headers(root: &Path) -> Result<()> {
    let files = Cmd::new("git")
        .args(["ls-files", "--cached", "--others", "--exclude-standard", "*.rs"])
        .dir(root)
        .read()?;
    let mut offenders = Vec::new();
    let mut checked = 0;
    for file in files.lines() {
        // A tracked file deleted in the working tree is about to go away: nothing to check.
        let Ok(text) = fs::read_to_string(root.join(file)) else {
            continue;
        };
        checked += 1;
        if !has_header(&text) {
            offenders.push(file);
        }
    }
    if !offenders.is_empty() {
        bail!(
            "{} file(s) do not start with a `//!` line saying what they are for:\n  {}",
            offenders.len(),
            offenders.join("\n  ")
        );
    }
    eprintln!("{checked} Rust files, all start with a `//!` line");
    Ok(())
}

/// Whether the first line of a file is a `//!` inner doc comment.
fn has_header(text: &str) -> bool {
    text.trim_start_matches('\u{feff}').lines().next().is_some_and(|line| line.starts_with("//!"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_header_wants_a_doc_comment_on_the_first_line() {
        let cases = [
            ("//! What this file is for.\n\nfn main() {}\n", true),
            ("//!\n", true),
            ("\u{feff}//! With a byte-order mark.\n", true),
            ("// A plain comment.\n", false),
            ("\n//! Too late.\n", false),
            ("#![allow(missing_docs)]\n//! After an attribute.\n", false),
            ("/// An item doc.\nfn f() {}\n", false),
            ("", false),
        ];
        for (text, expected) in cases {
            assert_eq!(has_header(text), expected, "file starting {text:?}");
        }
    }
}
