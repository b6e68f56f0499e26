//! `extauth-bridge hash-password`: reads one password line from stdin and prints its hash
//! in the users-file format on stdout. Exit 0 with the hash, 2 for an unreadable or empty
//! password, 1 if hashing or writing it fails.
//!
//! It only hashes (with the file backend's hasher): it reads no configuration and writes no file.

use std::io::{self, BufRead, Write};
use std::process::ExitCode;

use crate::secret::Secret;
use crate::setup::EXIT_CONFIG;

pub fn run() -> ExitCode {
    // Wiped on drop, like the Secret made from it.
    let mut line = zeroize::Zeroizing::new(String::new());
    if let Err(e) = io::stdin().lock().read_line(&mut line) {
        eprintln!("extauth-bridge: cannot read the password: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let trimmed = line.strip_suffix('\n').unwrap_or(line.as_str());
    let password = Secret::new(trimmed.strip_suffix('\r').unwrap_or(trimmed));
    drop(line);
    if password.is_empty() {
        eprintln!("extauth-bridge: empty password");
        return ExitCode::from(EXIT_CONFIG);
    }
    match crate::backend::file::hash::hash_password(&password) {
        Ok(hash) => {
            let mut stdout = io::stdout().lock();
            // stdout-ok: the hash is this command's output.
            if writeln!(stdout, "{hash}").is_err() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("extauth-bridge: {e}");
            ExitCode::FAILURE
        }
    }
}
