//! Glue between the command line, the configuration, logging and the request loop.
//! `main.rs` calls [`main`]; everything here returns an exit code instead of exiting, so the
//! pieces stay testable.

use std::io::{self, BufRead, Write};
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::secret::Secret;
use crate::setup::EXIT_CONFIG;

pub fn main() -> ExitCode {
    // Leaked: the daemon prepares reloads on a thread of their own (see `SignalControl`),
    // which needs the command line for as long as the process runs, and it is parsed once.
    let cli: &'static Cli = Box::leak(Box::new(Cli::parse()));
    let code = match cli.command {
        Some(Command::HashPassword) => hash_password_command(),
        Some(Command::Check { json }) => crate::commands::check::run(cli, json),
        Some(Command::Query {
            request,
            ref user,
            ref server,
        }) => crate::commands::query::run(cli, request, user, server),
        Some(Command::Users { ref action }) => crate::commands::users::run(action),
        Some(Command::Generate { ref what }) => crate::commands::generate::run(what),
        Some(Command::Run) | None => crate::daemon::run(cli),
    };
    // Log lines are written by a thread of their own (see logging.rs): give it a moment to
    // write the last ones before the process ends.
    crate::logging::finish();
    code
}

fn hash_password_command() -> ExitCode {
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
