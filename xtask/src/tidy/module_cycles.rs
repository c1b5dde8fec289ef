//! The import-cycle check of `cargo xtask tidy`: core's top-level modules must form layers, each using only those below it, so that reading one never means reading all.
//!
//! A module "uses" another when any of its files names `crate::other` (in a `use`, a
//! path, or a `crate::{...}` group), or `crate::Item` for an item the root re-exports from
//! `other`, outside comments and string literals. `lib.rs` is the crate root and
//! re-exports everything, so it is not a module here.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// One module's use of another: where it was first seen.
type Uses = BTreeMap<String, BTreeMap<String, String>>;

/// Fails when the top-level modules of the crate whose sources are in `src` use each other
/// in a loop, naming the loop and a line for each step of it.
pub(crate) fn check(src: &Path) -> Result<()> {
    let uses = collect(src)?;
    if let Some(cycle) = find_cycle(&uses) {
        let steps: Vec<String> = cycle
            .windows(2)
            .map(|pair| format!("{} -> {} ({})", pair[0], pair[1], uses[&pair[0]][&pair[1]]))
            .collect();
        bail!(
            "{}'s modules import each other in a loop:\n  {}\nmove the shared item down to \
             the lower module (or into one both use), so each module uses only those below it",
            src.display(),
            steps.join("\n  ")
        );
    }
    let modules: BTreeSet<&String> =
        uses.keys().chain(uses.values().flat_map(|m| m.keys())).collect();
    eprintln!("{}: {} modules, no import cycle", src.display(), modules.len());
    Ok(())
}

/// Every top-level module's uses of the others, read from the files under `src`.
fn collect(src: &Path) -> Result<Uses> {
    let root = fs::read_to_string(src.join("lib.rs")).context("reading the crate root")?;
    let reexports = root_reexports(&root);
    let mut uses = Uses::new();
    let mut pending = vec![src.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src)?;
            let Some(module) = top_module(relative) else { continue };
            let text = fs::read_to_string(&path)?;
            for (line, name) in crate_paths(&text) {
                // An item the root re-exports stands for its module; other names
                // (`crate::chrono`, a re-exported crate) are not modules of this crate.
                let Some(used) = reexports.get(&name).cloned() else { continue };
                if used != module {
                    let site = format!("{}:{line}", relative.display());
                    uses.entry(module.clone()).or_default().entry(used).or_insert(site);
                }
            }
        }
    }
    Ok(uses)
}

/// What the crate root makes reachable as `crate::name`: each module declared in it (as
/// itself) and each item it re-exports from one (as that module).
fn root_reexports(root: &str) -> BTreeMap<String, String> {
    let code = strip_comments_and_strings(root);
    let mut names = BTreeMap::new();
    for statement in code.split(';') {
        let words: Vec<&str> = statement.split_whitespace().collect();
        if let Some(module) = words.iter().position(|w| *w == "mod").and_then(|i| words.get(i + 1))
        {
            names.insert((*module).to_owned(), (*module).to_owned());
            continue;
        }
        let Some(at) = statement.find("pub use ") else { continue };
        let path = &statement[at + "pub use ".len()..];
        let Some((module, rest)) = path.split_once("::") else { continue };
        let module = module.trim();
        // Every identifier of the rest that is not a path segment names an item.
        let mut ident = String::new();
        for (i, c) in rest.char_indices() {
            if is_ident_char(c) {
                ident.push(c);
                continue;
            }
            let segment = rest[i..].starts_with("::");
            if !ident.is_empty() && !segment && ident != "self" && ident != "as" {
                names.insert(std::mem::take(&mut ident), module.to_owned());
            }
            ident.clear();
        }
        if !ident.is_empty() && ident != "self" {
            names.insert(ident, module.to_owned());
        }
    }
    names
}

/// The top-level module a file belongs to (`pool` for `pool/guard.rs` and `pool.rs`);
/// `None` for the crate root.
fn top_module(relative: &Path) -> Option<String> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_owned())
}

/// The first segment of every `crate::` path in `text`, with its line number, skipping
/// comments, string and character literals.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let code = strip_comments_and_strings(text);
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let mut at = 0;
    while let Some(offset) = code[at..].find("crate::") {
        let start = at + offset;
        at = start + "crate::".len();
        // `crate` must be a whole word (not `my_crate::`).
        if start > 0 && is_ident(bytes[start - 1]) {
            continue;
        }
        let line = code[..start].matches('\n').count() + 1;
        if bytes.get(at) == Some(&b'{') {
            for name in group_heads(&code[at..]) {
                found.push((line, name));
            }
        } else {
            let name: String = code[at..].chars().take_while(|c| is_ident_char(*c)).collect();
            if !name.is_empty() {
                found.push((line, name));
            }
        }
    }
    found
}

/// The first identifier of each item of the `{...}` group `text` starts with, at depth one
/// (`{a::{b, c}, d}` gives `a` and `d`).
fn group_heads(text: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut expecting = true;
    let mut current = String::new();
    for c in text.chars() {
        match c {
            '{' => {
                depth += 1;
                if depth > 1 {
                    expecting = false;
                }
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => expecting = true,
            c if depth == 1 && expecting && is_ident_char(c) => current.push(c),
            _ if depth == 1 && !current.is_empty() => {
                heads.push(std::mem::take(&mut current));
                expecting = false;
            }
            _ => {}
        }
    }
    if !current.is_empty() {
        heads.push(current);
    }
    heads.retain(|h| h != "self");
    heads
}

/// `text` with comments and the contents of string and character literals blanked out,
/// keeping its line breaks.
pub(super) fn strip_comments_and_strings(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    // Skips to just past `end` from `i`, keeping line breaks.
    let skip_until = |i: &mut usize, out: &mut String, end: &dyn Fn(&[char], usize) -> bool| {
        while *i < chars.len() && !end(&chars, *i) {
            if chars[*i] == '\n' {
                out.push('\n');
            }
            *i += 1;
        }
    };
    while i < chars.len() {
        let next = chars.get(i + 1).copied();
        match chars[i] {
            '/' if next == Some('/') => skip_until(&mut i, &mut out, &|c, i| c[i] == '\n'),
            '/' if next == Some('*') => {
                i += 2;
                skip_until(&mut i, &mut out, &|c, i| c[i] == '*' && c.get(i + 1) == Some(&'/'));
                i += 2;
            }
            '"' => {
                i += 1;
                skip_until(&mut i, &mut out, &|c, i| c[i] == '"' && !escaped(c, i));
                i += 1;
                out.push_str("\"\"");
            }
            // A character literal (`'x'`, `'\''`), not a lifetime (`'a`).
            '\'' if next == Some('\\') || chars.get(i + 2) == Some(&'\'') => {
                i += 1;
                skip_until(&mut i, &mut out, &|c, i| c[i] == '\'' && !escaped(c, i));
                i += 1;
                out.push_str("' '");
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Whether the character at `i` is escaped by an odd run of backslashes before it.
fn escaped(chars: &[char], i: usize) -> bool {
    chars[..i].iter().rev().take_while(|c| **c == '\\').count() % 2 == 1
}

/// A cycle among the modules, as the list of modules around it (first repeated last).
fn find_cycle(uses: &Uses) -> Option<Vec<String>> {
    fn visit<'a>(
        module: &'a str,
        uses: &'a Uses,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|m| *m == module) {
            let mut cycle: Vec<String> = path[start..].iter().map(|m| (*m).to_owned()).collect();
            cycle.push(module.to_owned());
            return Some(cycle);
        }
        if !done.insert(module) {
            return None;
        }
        path.push(module);
        for next in uses.get(module).into_iter().flat_map(|m| m.keys()) {
            if let Some(cycle) = visit(next, uses, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    uses.keys().find_map(|module| visit(module, uses, &mut Vec::new(), &mut done))
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heads(text: &str) -> Vec<String> {
        crate_paths(text).into_iter().map(|(_, name)| name).collect()
    }

    #[test]
    fn reads_paths_and_groups_but_not_comments_or_strings() {
        let text = "use crate::pool::Pool;\n\
                    use crate::{config::{A, B}, error::Error, self};\n\
                    // crate::topology in a comment\n\
                    /// [`x`](crate::health::X)\n\
                    let s = \"crate::metrics \\\" crate::info\";\n\
                    fn f() -> crate::value::Value { my_crate::other::x() }\n\
                    /* crate::blocking */ let c = '\"'; let d = '\\''; let q = \"'\";\n\
                    fn g<'a>(x: &'a crate::mode::Mode) {}";
        assert_eq!(heads(text), ["pool", "config", "error", "value", "mode"]);
    }

    #[test]
    fn root_reexports_stand_for_their_module() {
        let root = "mod pool;\npub mod config;\n#[cfg(test)]\nmod tests;\n\
                    pub use chrono;\n\
                    pub use config::{DatabaseUrl, pool::PoolConfiguration as Preset};\n\
                    pub use telemetry::metrics::{PoolStatus, SlaSummary};\n\
                    pub use error::Error;";
        let names = root_reexports(root);
        let get = |name: &str| names.get(name).map(String::as_str);
        assert_eq!(get("pool"), Some("pool"));
        assert_eq!(get("config"), Some("config"));
        assert_eq!(get("DatabaseUrl"), Some("config"));
        assert_eq!(get("Preset"), Some("config"));
        assert_eq!(get("PoolStatus"), Some("telemetry"));
        assert_eq!(get("SlaSummary"), Some("telemetry"));
        assert_eq!(get("Error"), Some("error"));
        assert_eq!(get("metrics"), None);
        assert_eq!(get("chrono"), None);
    }

    #[test]
    fn a_loop_is_found_and_layers_are_not() {
        fn add(uses: &mut Uses, from: &str, to: &str) {
            uses.entry(from.to_owned()).or_default().insert(to.to_owned(), format!("{from}.rs:1"));
        }
        let mut uses = Uses::new();
        add(&mut uses, "pool", "error");
        add(&mut uses, "topology", "pool");
        add(&mut uses, "health", "pool");
        assert_eq!(find_cycle(&uses), None);
        add(&mut uses, "pool", "topology");
        let cycle = find_cycle(&uses).unwrap_or_default();
        assert_eq!(cycle.first(), cycle.last());
        assert!(cycle.contains(&"pool".to_owned()) && cycle.contains(&"topology".to_owned()));
    }
}
