//! Reading one Rust file for `ucm audit`: parsed with syn, its `use` items resolved, every call (including those inside macro arguments) matched against the catalogue; comments, strings and doc text never count.

use std::collections::HashMap;

use syn::visit::{self, Visit};
use syn::{Expr, ExprCall, ExprMethodCall, ExprPath, Macro, UseTree};

use super::catalogue::{self, Route};

/// One call the catalogue knows, where it is in its file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Site {
    /// 1-based line and column of the call.
    pub(crate) line: usize,
    pub(crate) column: usize,
    /// What it makes: `sqlx pool`, `diesel connection`, `ucm manager`...
    pub(crate) kind: &'static str,
    /// Around ucm or through it.
    pub(crate) route: Route,
    /// The call as written, generics left out: `PgPoolOptions::new`, `.create_pool`.
    pub(crate) call: String,
}

/// The sites in `source`, in the order they appear.
///
/// # Errors
/// syn's error, with its line, when the file is not valid Rust.
pub(crate) fn scan(source: &str) -> Result<Vec<Site>, String> {
    let file = syn::parse_file(source).map_err(|e| {
        let at = e.span().start();
        format!("line {}:{}: {e}", at.line, at.column + 1)
    })?;
    let mut imports = Imports::default();
    for item in &file.items {
        if let syn::Item::Use(item) = item {
            imports.add(&item.tree, &mut Vec::new());
        }
    }
    let mut names = CrateNames { crates: Vec::new(), modules: Vec::new(), aliases: HashMap::new() };
    names.visit_file(&file);
    imports.local_modules = names.modules;
    imports.aliases = names.aliases;
    for name in names.crates {
        if !imports.crates.contains(&name) {
            imports.crates.push(name);
        }
    }
    let mut scanner = Scanner { imports, sites: Vec::new() };
    scanner.visit_file(&file);
    scanner.sites.sort_by_key(|s| (s.line, s.column));
    scanner.sites.dedup();
    Ok(scanner.sites)
}

/// The file's `use` items: each name brought in, and the paths of its globs.
#[derive(Default)]
struct Imports {
    names: HashMap<String, Vec<String>>,
    globs: Vec<Vec<String>>,
    /// Every crate the file names, in a `use` or as a path's first segment.
    crates: Vec<String>,
    /// The modules the file declares: a path through one of them is the file's own.
    local_modules: Vec<String>,
    /// The type aliases the file declares (`type DbPool = DieselBlockingPool<PgDialect>`),
    /// as the path they name.
    aliases: HashMap<String, Vec<String>>,
}

impl Imports {
    /// The same `use` names, globs, crates and modules (no aliases).
    fn clone_names(&self) -> Self {
        Self {
            names: self.names.clone(),
            globs: self.globs.clone(),
            crates: self.crates.clone(),
            local_modules: self.local_modules.clone(),
            aliases: HashMap::new(),
        }
    }

    fn add(&mut self, tree: &UseTree, prefix: &mut Vec<String>) {
        match tree {
            UseTree::Path(path) => {
                prefix.push(path.ident.to_string());
                self.add(&path.tree, prefix);
                prefix.pop();
            }
            UseTree::Name(name) => self.bring(prefix, &name.ident.to_string(), None),
            UseTree::Rename(rename) => {
                self.bring(prefix, &rename.ident.to_string(), Some(rename.rename.to_string()));
            }
            UseTree::Glob(_) => {
                self.globs.push(prefix.clone());
                self.note_crate(prefix);
            }
            UseTree::Group(group) => {
                for tree in &group.items {
                    self.add(tree, prefix);
                }
            }
        }
    }

    fn bring(&mut self, prefix: &[String], name: &str, alias: Option<String>) {
        let mut full = prefix.to_vec();
        if name != "self" {
            full.push(name.to_owned());
        }
        let Some(last) = full.last().cloned() else { return };
        self.note_crate(&full);
        self.names.insert(alias.unwrap_or(last), full);
    }

    fn note_crate(&mut self, path: &[String]) {
        if let Some(first) = path.first() {
            let first = first.trim_start_matches("::").to_owned();
            if !self.crates.contains(&first) {
                self.crates.push(first);
            }
        }
    }

    /// `path` with its first segment replaced by what the file's `use` items say it is; a
    /// glob-imported name is tried under each glob until one matches the catalogue.
    fn resolve(&self, path: &[String]) -> Vec<Vec<String>> {
        let Some((first, rest)) = path.split_first() else { return Vec::new() };
        let own = ["crate", "self", "super", "Self"];
        if own.contains(&first.as_str()) || self.local_modules.contains(first) {
            return Vec::new();
        }
        if let Some(aliased) = self.aliases.get(first) {
            // An alias of a path through another alias would loop; one level is what code has.
            let path: Vec<String> = aliased.iter().chain(rest).cloned().collect();
            if path.first() != Some(first) {
                return self.clone_names().resolve(&path);
            }
        }
        if let Some(full) = self.names.get(first) {
            return vec![full.iter().chain(rest).cloned().collect()];
        }
        let mut candidates = vec![path.to_vec()];
        candidates.extend(self.globs.iter().map(|glob| glob.iter().chain(path).cloned().collect()));
        candidates
    }
}

struct Scanner {
    imports: Imports,
    sites: Vec<Site>,
}

impl Scanner {
    fn record(&mut self, span: proc_macro2::Span, kind: &'static str, route: Route, call: String) {
        let at = span.start();
        self.sites.push(Site { line: at.line, column: at.column + 1, kind, route, call });
    }

    fn call_path(&mut self, path: &ExprPath) {
        let written: Vec<String> =
            path.path.segments.iter().map(|segment| segment.ident.to_string()).collect();
        let found =
            self.imports.resolve(&written).into_iter().find_map(|full| catalogue::find(&full));
        if let Some(pattern) = found {
            let call = written.join("::");
            self.record(span_of(&path.path), pattern.kind, pattern.route, call);
        }
    }
}

fn span_of(path: &syn::Path) -> proc_macro2::Span {
    path.segments.first().map_or_else(proc_macro2::Span::call_site, |s| s.ident.span())
}

impl<'ast> Visit<'ast> for Scanner {
    fn visit_expr_call(&mut self, call: &'ast ExprCall) {
        if let Expr::Path(path) = &*call.func {
            self.call_path(path);
        }
        visit::visit_expr_call(self, call);
    }

    fn visit_expr_method_call(&mut self, call: &'ast ExprMethodCall) {
        let method = call.method.to_string();
        let pattern = catalogue::METHOD_PATTERNS
            .iter()
            .find(|p| p.method == method && self.imports.crates.iter().any(|c| c == p.krate));
        if let Some(pattern) = pattern {
            self.record(call.method.span(), pattern.kind, Route::Direct, format!(".{method}"));
        }
        visit::visit_expr_method_call(self, call);
    }

    fn visit_macro(&mut self, mac: &'ast Macro) {
        // Calls inside `assert!(..)`, `tokio::join!(..)`, `vec![..]`...: their arguments
        // are read as expressions when they are some.
        let parser = syn::punctuated::Punctuated::<Expr, syn::Token![,]>::parse_terminated;
        if let Ok(arguments) = mac.parse_body_with(parser) {
            for argument in &arguments {
                self.visit_expr(argument);
            }
        }
        visit::visit_macro(self, mac);
    }
}

/// The first segment of every path of two or more segments (`deadpool_postgres::Config`
/// names `deadpool_postgres`), and the modules and type aliases the file declares.
struct CrateNames {
    crates: Vec<String>,
    modules: Vec<String>,
    aliases: HashMap<String, Vec<String>>,
}

impl<'ast> Visit<'ast> for CrateNames {
    fn visit_path(&mut self, path: &'ast syn::Path) {
        if let (Some(first), true) = (path.segments.first(), path.segments.len() > 1) {
            let name = first.ident.to_string();
            if !self.crates.contains(&name) {
                self.crates.push(name);
            }
        }
        visit::visit_path(self, path);
    }

    fn visit_item_type(&mut self, alias: &'ast syn::ItemType) {
        if let syn::Type::Path(aliased) = &*alias.ty {
            let path = aliased.path.segments.iter().map(|s| s.ident.to_string()).collect();
            self.aliases.insert(alias.ident.to_string(), path);
        }
        visit::visit_item_type(self, alias);
    }

    fn visit_item_mod(&mut self, module: &'ast syn::ItemMod) {
        self.modules.push(module.ident.to_string());
        visit::visit_item_mod(self, module);
    }
}
