//! A small process runner that prints every command as `$ program args...` before running it.

use std::{
    env,
    ffi::{OsStr, OsString},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Output, Stdio},
};

use anyhow::{Context, Result, bail};

/// One external command, built up like `std::process::Command` but printable and quietable.
pub(crate) struct Cmd {
    program: OsString,
    /// The program as echoed, when its full path would only be noise (`cargo`).
    shown_as: Option<&'static str>,
    args: Vec<OsString>,
    /// Variables shown in the echoed command line, so it can be pasted into a shell.
    envs: Vec<(String, String)>,
    /// Variables passed but not shown: they may hold database URLs with passwords.
    hidden_envs: Vec<(String, String)>,
    dir: Option<PathBuf>,
    quiet: bool,
}

impl Cmd {
    /// A command running `program`, which is looked up on `PATH` unless it is a path.
    pub(crate) fn new(program: impl AsRef<OsStr>) -> Self {
        Self {
            program: program.as_ref().to_owned(),
            shown_as: None,
            args: Vec::new(),
            envs: Vec::new(),
            hidden_envs: Vec::new(),
            dir: None,
            quiet: false,
        }
    }

    /// `cargo`, the one that runs this xtask (so `cargo +nightly xtask` stays on nightly).
    pub(crate) fn cargo() -> Self {
        let mut cmd = Self::new(env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")));
        cmd.shown_as = Some("cargo");
        cmd
    }

    /// Appends one argument.
    pub(crate) fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends several arguments.
    pub(crate) fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable and shows it in the echoed command line.
    pub(crate) fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Sets an environment variable without echoing its value.
    pub(crate) fn hidden_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.hidden_envs.push((key.into(), value.into()));
        self
    }

    /// Runs the command in `dir` instead of the current directory.
    pub(crate) fn dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_owned());
        self
    }

    /// When `quiet`, the command is not echoed and its output is captured: it only shows up in
    /// the error when the command fails.
    pub(crate) fn quiet(mut self, quiet: bool) -> Self {
        self.quiet = quiet;
        self
    }

    /// Runs the command to completion and fails unless it exits successfully.
    pub(crate) fn run(&self) -> Result<()> {
        if self.quiet {
            let output = self.output()?;
            return self.check(output.status, Some(&output));
        }
        self.echo();
        let status = self.command().status().with_context(|| self.spawn_failed())?;
        self.check(status, None)
    }

    /// Runs the command and returns its standard output, trimmed; fails unless it exits
    /// successfully (the error then carries its standard error).
    pub(crate) fn read(&self) -> Result<String> {
        if !self.quiet {
            self.echo();
        }
        let output = self.output()?;
        self.check(output.status, Some(&output))?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// Runs the command for its exit status only, for probes where failure is an answer and
    /// not an error; its output is shown unless the command is quiet.
    pub(crate) fn status(&self) -> Result<ExitStatus> {
        if self.quiet {
            return Ok(self.output()?.status);
        }
        self.echo();
        // The child's standard output goes to our standard error: our standard output is
        // reserved for results that scripts read (the URL lines of `services`).
        self.command()
            .stdout(Stdio::from(std::io::stderr()))
            .status()
            .with_context(|| self.spawn_failed())
    }

    /// The command as a shell line, `VAR=value program 'arg with space'`.
    pub(crate) fn display(&self) -> String {
        let envs = self.envs.iter().map(|(k, v)| format!("{k}={}", shell_quote(v)));
        let program = match self.shown_as {
            Some(name) => name.to_owned(),
            None => shell_quote(&self.program.to_string_lossy()),
        };
        let args = self.args.iter().map(|a| shell_quote(&a.to_string_lossy()));
        envs.chain(std::iter::once(program)).chain(args).collect::<Vec<_>>().join(" ")
    }

    fn echo(&self) {
        eprintln!("$ {}", self.display());
    }

    fn output(&self) -> Result<Output> {
        self.command().stdin(Stdio::null()).output().with_context(|| self.spawn_failed())
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        command.envs(self.envs.iter().chain(&self.hidden_envs).map(|(k, v)| (k, v)));
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        command
    }

    fn check(&self, status: ExitStatus, output: Option<&Output>) -> Result<()> {
        if status.success() {
            return Ok(());
        }
        let mut message = format!("`{}` failed ({status})", self.display());
        if let Some(output) = output {
            for stream in [&output.stderr, &output.stdout] {
                let text = String::from_utf8_lossy(stream);
                let text = text.trim();
                if !text.is_empty() {
                    message.push_str(":\n");
                    message.push_str(text);
                }
            }
        }
        bail!(message)
    }

    fn spawn_failed(&self) -> String {
        format!(
            "could not run `{}`: is `{}` installed and on PATH?",
            self.display(),
            self.program.to_string_lossy()
        )
    }
}

/// Finds `program` on `PATH` the way a shell would; `None` when it is not installed.
pub(crate) fn which(program: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| candidate.is_file())
}

/// Quotes `word` for a POSIX shell, leaving plain words as they are so echoes stay readable.
pub(crate) fn shell_quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:=,@%+".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_leaves_plain_words_and_quotes_the_rest() {
        let cases = [
            ("cargo", "cargo"),
            ("--all-targets", "--all-targets"),
            ("postgres://postgres@127.0.0.1:5432/test", "postgres://postgres@127.0.0.1:5432/test"),
            ("", "''"),
            ("-D warnings", "'-D warnings'"),
            ("it's", r"'it'\''s'"),
            ("$HOME", "'$HOME'"),
        ];
        for (word, expected) in cases {
            assert_eq!(shell_quote(word), expected, "quoting {word:?}");
        }
    }

    #[test]
    fn display_shows_visible_env_and_hides_hidden_env() {
        let cmd = Cmd::new("cargo")
            .arg("doc")
            .env("RUSTDOCFLAGS", "-D warnings")
            .hidden_env("PG_DATABASE_URL", "postgres://u:secret@h/db");
        assert_eq!(cmd.display(), "RUSTDOCFLAGS='-D warnings' cargo doc");
        let cmd = Cmd::cargo().args(["fmt", "--check"]);
        assert_eq!(cmd.display(), "cargo fmt --check");
    }
}
