//! `extauth-bridge generate man DIR | completions SHELL DIR` (hidden): the man pages and
//! shell completions, generated from the clap definitions so they cannot drift from the
//! real options. A subcommand rather than a build script: builds and start-up stay lean,
//! and packaging (scripts/package) runs it once on the built binary.

use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;

use super::{fail, say, EXIT_ERROR, EXIT_OK};
use crate::cli::{Cli, GenerateWhat};

pub fn run(what: &GenerateWhat) -> ExitCode {
    let result = match what {
        GenerateWhat::Man { dir } => man(dir),
        GenerateWhat::Completions { shell, dir } => completions(*shell, dir),
    };
    match result {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => fail(EXIT_ERROR, e),
    }
}

/// `extauth-bridge.1` plus one page per visible subcommand (`extauth-bridge-check.1`…).
fn man(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(Cli::command(), dir)?;
    say(format_args!("man pages written to {}", dir.display()));
    Ok(())
}

fn completions(shell: clap_complete::Shell, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = Cli::command();
    let path = clap_complete::generate_to(shell, &mut cmd, "extauth-bridge", dir)?;
    say(format_args!("{}", path.display()));
    Ok(())
}
