//! `extauth-bridge generate man DIR | completions SHELL DIR` (hidden): the man pages and
//! shell completions, generated from the clap definitions so they cannot drift from the
//! real options. `generate shared-key FILE` writes the `[shared].key_file` every node shares. A subcommand rather than a build script: builds and start-up stay lean,
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
        GenerateWhat::SharedKey { file } => shared_key(file),
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

/// 32 random bytes as 64 hex digits, in a new file (O_EXCL, mode 0600): an existing key is
/// never replaced, since every node's entries are keyed by it.
fn shared_key(file: &Path) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    rand::Fill::fill(&mut key[..], &mut rand::rng());
    let mut text = zeroize::Zeroizing::new(String::with_capacity(65));
    for byte in key.iter() {
        text.push_str(&format!("{byte:02x}"));
    }
    text.push('\n');
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", file.display())))?;
    out.write_all(text.as_bytes())?;
    out.sync_all()?;
    say(format_args!(
        "shared key written to {} (mode 0600); copy it to every node as [shared].key_file",
        file.display()
    ));
    Ok(())
}
