//! The export-list check of `cargo xtask tidy`: the names `ucm`'s crate docs list under "What `ucm` exports" are exactly the names its root exports.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::module_cycles::strip_comments_and_strings;

/// The heading of the list in the crate docs.
const HEADING: &str = "//! # What `ucm` exports";

/// Fails naming every name exported but not listed, and listed but not exported.
pub(crate) fn check(lib: &Path) -> Result<()> {
    let text = fs::read_to_string(lib).with_context(|| format!("reading {}", lib.display()))?;
    let listed = listed(&text).with_context(|| format!("in {}", lib.display()))?;
    let exported = exported(&text);
    let unlisted: Vec<&String> = exported.difference(&listed).collect();
    let missing: Vec<&String> = listed.difference(&exported).collect();
    if !unlisted.is_empty() || !missing.is_empty() {
        bail!(
            "{}: the crate docs' export list and the code disagree\n  exported, not listed: \
             {unlisted:?}\n  listed, not exported: {missing:?}\nlist each export under \"What \
             `ucm` exports\", or stop exporting it",
            lib.display()
        );
    }
    eprintln!("{}: {} exports, all listed in the crate docs", lib.display(), exported.len());
    Ok(())
}

/// The backticked names in the list items under [`HEADING`], up to the next heading.
fn listed(text: &str) -> Result<BTreeSet<String>> {
    let mut lines = text.lines().skip_while(|line| line.trim_end() != HEADING);
    if lines.next().is_none() {
        bail!("no `{}` section in the crate docs", HEADING.trim_start_matches("//! "));
    }
    let mut names = BTreeSet::new();
    let mut in_item = false;
    for line in lines.take_while(|line| !line.starts_with("//! #")) {
        let Some(doc) = line.strip_prefix("//!") else { break };
        if doc.starts_with(" - ") {
            in_item = true;
        } else if !doc.starts_with("   ") {
            in_item = false;
        }
        if !in_item {
            continue;
        }
        for (i, quoted) in doc.split('`').enumerate() {
            if i % 2 == 1 && !quoted.is_empty() && quoted.chars().all(is_ident_char) {
                names.insert(quoted.to_owned());
            }
        }
    }
    Ok(names)
}

/// The names the crate root makes public: what its `pub use` items bring in (the last
/// segment, or the alias; `self` in a group stands for the path before it) and the
/// items it declares `pub` itself.
fn exported(text: &str) -> BTreeSet<String> {
    let code = strip_comments_and_strings(text);
    let mut names = BTreeSet::new();
    for statement in code.split([';', '{', '}']).map(str::trim) {
        for keyword in
            ["pub type ", "pub mod ", "pub fn ", "pub struct ", "pub enum ", "pub trait "]
        {
            if let Some(at) = statement.find(keyword) {
                let name: String = statement[at + keyword.len()..]
                    .chars()
                    .take_while(|c| is_ident_char(*c))
                    .collect();
                names.insert(name);
            }
        }
    }
    for statement in code.split(';') {
        let Some(at) = statement.find("pub use ") else { continue };
        use_names(&statement[at + "pub use ".len()..], &mut names);
    }
    names
}

/// The names a `use` tree brings in (`a::{self, b as c, d::e}` gives `a`, `c`, `e`; a
/// glob gives `*`, which no list names).
fn use_names(tree: &str, names: &mut BTreeSet<String>) {
    let spaced: String = tree
        .replace("::", " :: ")
        .chars()
        .flat_map(|c| if matches!(c, '{' | '}' | ',') { vec![' ', c, ' '] } else { vec![c] })
        .collect();
    let tokens: Vec<&str> = spaced.split_whitespace().collect();
    // The segment a `{` opens onto, per open brace (for `self`).
    let mut prefixes: Vec<&str> = Vec::new();
    let mut last_segment = "";
    let mut i = 0;
    while i < tokens.len() {
        let token = tokens[i];
        let next = tokens.get(i + 1).copied();
        match token {
            "{" => prefixes.push(last_segment),
            "}" => {
                prefixes.pop();
            }
            "," | "::" => {}
            _ if next == Some("::") => last_segment = token,
            _ if next == Some("as") => {
                if let Some(alias) = tokens.get(i + 2) {
                    names.insert((*alias).to_owned());
                }
                i += 2;
            }
            "self" => {
                if let Some(prefix) = prefixes.last() {
                    names.insert((*prefix).to_owned());
                }
            }
            _ => {
                names.insert(token.to_owned());
            }
        }
        i += 1;
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIB: &str = "//! Crate docs.\n\
        //!\n\
        //! # What `ucm` exports\n\
        //!\n\
        //! Only the items below; `ucm-kernel` is not one.\n\
        //! - Things: [`Manager`], `SqlxPool`, and the backend\n\
        //!   crate `ucm_sqlx` (with the sqlx feature).\n\
        //! - Functions: [`shutdown_all`], `Alias`, `testing`.\n\
        //!\n\
        //! Checked by `tidy`.\n\
        //!\n\
        //! # Features\n\
        //! - `sqlx`: the backend.\n\
        pub use ucm_kernel::{Manager, config::{Pooler as Alias}};\n\
        #[cfg(feature = \"sqlx\")]\n\
        pub use ucm_sqlx::{self, SqlxPool};\n\
        pub use registry::shutdown_all;\n\
        #[cfg(feature = \"testing\")]\n\
        pub mod testing;\n\
        mod registry;\n";

    #[test]
    fn the_list_and_the_exports_are_read_alike() {
        let expected: BTreeSet<String> =
            ["Alias", "Manager", "SqlxPool", "shutdown_all", "testing", "ucm_sqlx"]
                .map(str::to_owned)
                .into();
        assert_eq!(listed(LIB).ok(), Some(expected.clone()));
        assert_eq!(exported(LIB), expected);
    }

    #[test]
    fn an_unlisted_export_is_found() {
        let text = LIB.replace(
            "pub use registry::shutdown_all;",
            "pub use registry::{shutdown_all, close_manager};",
        );
        let unlisted: Vec<String> =
            exported(&text).difference(&listed(&text).unwrap_or_default()).cloned().collect();
        assert_eq!(unlisted, ["close_manager"]);
        let globbed = LIB.replace("pub use registry::shutdown_all;", "pub use registry::*;");
        assert!(exported(&globbed).contains("*"));
    }
}
