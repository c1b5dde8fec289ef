//! `ucm audit PATH`: every place a Rust codebase opens a database connection or pool without ucm, and every place it goes through ucm, with the consolidation figure (N direct sites → 1 manager); text or JSON, and `--deny` for CI gates.

mod catalogue;
mod scan;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use catalogue::Route;
use scan::Site;

use crate::output::{self, Exit, Format};

/// `ucm audit` options.
#[derive(Debug, clap::Args)]
pub(crate) struct AuditArgs {
    /// The codebase to read: a directory (every `.rs` file under it, skipping `target`
    /// and hidden directories) or one file.
    path: PathBuf,
    /// `text` (grouped by file) or `json`.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Exit with status 1 when a direct connection site remains (a CI gate for a finished
    /// migration).
    #[arg(long)]
    deny: bool,
}

/// One file's sites.
#[derive(Debug, serde::Serialize)]
struct FileReport {
    file: String,
    sites: Vec<Site>,
}

/// What the audit found.
#[derive(Debug, serde::Serialize)]
struct Report {
    root: String,
    files_read: usize,
    /// Files that are not valid Rust, with syn's error: read by nobody, so said.
    unparsed: Vec<Unparsed>,
    files: Vec<FileReport>,
    direct_sites: usize,
    through_ucm_sites: usize,
    /// `N direct connection sites -> 1 manager`.
    consolidation: String,
}

#[derive(Debug, serde::Serialize)]
struct Unparsed {
    file: String,
    error: String,
}

pub(crate) fn run(args: &AuditArgs) -> anyhow::Result<()> {
    let report = audit(&args.path)?;
    match args.format {
        Format::Json => output::print_json(&report)?,
        Format::Text => print_text(&report),
    }
    if args.deny && report.direct_sites > 0 {
        let message = format!(
            "{} direct connection site(s) remain in {} (--deny); route them through ucm",
            report.direct_sites, report.root
        );
        return Err(Exit::new(output::REJECTING, message).into());
    }
    Ok(())
}

fn audit(root: &Path) -> anyhow::Result<Report> {
    let mut paths = Vec::new();
    if root.is_file() {
        paths.push(root.to_path_buf());
    } else if root.is_dir() {
        collect(root, &mut paths)?;
    } else {
        let message = format!("{} is neither a file nor a directory", root.display());
        return Err(Exit::new(output::BAD_INPUT, message).into());
    }
    paths.sort();
    let mut files = Vec::new();
    let mut unparsed = Vec::new();
    for path in &paths {
        let name = path.strip_prefix(root).unwrap_or(path).display().to_string();
        let name = if name.is_empty() { path.display().to_string() } else { name };
        let source =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        match scan::scan(&source) {
            Ok(sites) if sites.is_empty() => {}
            Ok(sites) => files.push(FileReport { file: name, sites }),
            Err(error) => unparsed.push(Unparsed { file: name, error }),
        }
    }
    let count = |route| files.iter().flat_map(|f| &f.sites).filter(|s| s.route == route).count();
    let (direct_sites, through_ucm_sites) = (count(Route::Direct), count(Route::ThroughUcm));
    Ok(Report {
        root: root.display().to_string(),
        files_read: paths.len(),
        unparsed,
        files,
        direct_sites,
        through_ucm_sites,
        consolidation: format!("{direct_sites} direct connection sites -> 1 manager"),
    })
}

/// Every `.rs` file under `dir`, skipping `target` and hidden directories.
fn collect(dir: &Path, paths: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                collect(&path, paths)?;
            }
        } else if name.ends_with(".rs") {
            paths.push(path);
        }
    }
    Ok(())
}

fn print_text(report: &Report) {
    println!(
        "ucm audit of {}: {} Rust files read, {} direct connection site(s), {} through ucm",
        report.root, report.files_read, report.direct_sites, report.through_ucm_sites
    );
    for file in &report.files {
        println!("\n{}", file.file);
        for site in &file.sites {
            let route = match site.route {
                Route::Direct => "direct",
                Route::ThroughUcm => "through ucm",
            };
            println!(
                "  {:>5}:{:<3} {:<12} {:<26} {}",
                site.line, site.column, route, site.kind, site.call
            );
        }
    }
    for file in &report.unparsed {
        println!("\nnot read (not valid Rust): {}: {}", file.file, file.error);
    }
    println!("\nconsolidation: {}", report.consolidation);
}
