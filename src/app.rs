//! Dispatch: parse the command line, then run the daemon ([`crate::daemon`]) or one of the
//! operator commands ([`crate::commands`]), and let the log writer finish.
//! `main.rs` calls [`main`]; everything returns an exit code instead of exiting, so the
//! pieces stay testable.
//!
//! It must not build anything itself (configuration, handler, logging, runtime): that is
//! [`crate::setup`]'s and the daemon's. Nothing imports this module but `main.rs`.

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

pub fn main() -> ExitCode {
    // Leaked: the daemon prepares reloads on a thread of their own (see `daemon::reload::SignalControl`),
    // which needs the command line for as long as the process runs, and it is parsed once.
    let cli: &'static Cli = Box::leak(Box::new(Cli::parse()));
    let code = match cli.command {
        Some(Command::HashPassword) => crate::commands::hash_password::run(),
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
    // Log lines are written by a thread of their own (see logging/writer.rs): give it a moment to
    // write the last ones before the process ends.
    crate::logging::finish();
    code
}
