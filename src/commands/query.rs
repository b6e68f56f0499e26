//! `extauth-bridge query auth|isuser|… USER SERVER`: one question through the configured
//! routes, exactly as the daemon would ask it (same configuration loading, same router, same
//! deadline and panic handling), answered on stdout with the backend that decided, why, and
//! how long it took. Exit 0 for yes, 1 for no, 2 for an error.

use std::process::ExitCode;
use std::time::Instant;

use super::{fail, millis, prompt, say, EXIT_ERROR, EXIT_NO, EXIT_OK};
use crate::cli::{Cli, QueryRequest};
use crate::outcome::{Outcome, Status};
use crate::request::{Account, Command, Request};
use crate::secret::Secret;
use crate::server::handle_request;
use crate::setup::load_config;

impl QueryRequest {
    fn needs_password(self) -> bool {
        matches!(
            self,
            QueryRequest::Auth
                | QueryRequest::Setpass
                | QueryRequest::Tryregister
                | QueryRequest::Removeuser3
        )
    }

    fn request(self, account: Account, password: Secret) -> Request {
        match self {
            QueryRequest::Auth => Request::Auth(account, password),
            QueryRequest::Isuser => Request::IsUser(account),
            QueryRequest::Setpass => Request::SetPass(account, password),
            QueryRequest::Tryregister => Request::TryRegister(account, password),
            QueryRequest::Removeuser => Request::RemoveUser(account),
            QueryRequest::Removeuser3 => Request::RemoveUser3(account, password),
        }
    }
}

/// The same rules the wire parser applies to the user and server fields, plus no `:`
/// (which could not be sent on the wire at all).
fn field_error(what: &str, value: &str) -> Option<String> {
    if value.is_empty() {
        Some(format!("empty {what}"))
    } else if value.contains(':') {
        Some(format!(
            "{what} {value:?} contains ':', which the protocols cannot carry"
        ))
    } else if value.chars().any(char::is_control) {
        Some(format!("{what} contains a control character"))
    } else {
        None
    }
}

/// The exit status for an outcome: yes, a plain no, or a failure to get an answer.
pub fn exit_status(outcome: &Outcome) -> u8 {
    if outcome.answer {
        EXIT_OK
    } else if matches!(
        outcome.status,
        Status::No | Status::Refused(_) | Status::Throttled(_) | Status::Repeated(_)
    ) {
        EXIT_NO
    } else {
        EXIT_ERROR
    }
}

/// What a backend's plain yes or no means for each command, in an operator's words.
fn meaning(command: Command, yes: bool) -> &'static str {
    match (command, yes) {
        (Command::Auth, true) => "the password is right",
        (Command::Auth, false) => "wrong password or unknown user",
        (Command::IsUser, true) => "the account exists",
        (Command::IsUser, false) => "no such account",
        (Command::SetPass, true) => "password changed",
        (Command::SetPass, false) => "not changed: no such account",
        (Command::TryRegister, true) => "account created",
        (Command::TryRegister, false) => "not created: the account exists",
        (Command::RemoveUser | Command::RemoveUser3, true) => "account removed",
        (Command::RemoveUser, false) => "not removed: no such account",
        (Command::RemoveUser3, false) => "wrong password, unknown user, or not removed",
        (Command::CertAuth, _) => "certificate authentication",
    }
}

/// The `why` line: the outcome's word first (what the log's `outcome` says), then who said it
/// and what it means.
fn why(command: Command, outcome: &Outcome) -> String {
    let backend = outcome.backend.as_deref().unwrap_or("-");
    match &outcome.status {
        Status::Yes | Status::No => {
            let word = outcome.status.as_str();
            let meaning = meaning(command, outcome.answer);
            format!("{word}: backend `{backend}` answered {word} ({meaning})")
        }
        Status::Cached => format!(
            "cached: backend `{backend}` answered yes to this password less than cache.ttl ago"
        ),
        Status::SharedCached => format!(
            "cached_shared: backend `{backend}` answered yes to this password less than \
             cache.ttl ago, through some node; from the shared store"
        ),
        Status::Stale(message) => format!("stale: {message}"),
        Status::Throttled(message) => format!("throttled: {message} (no backend asked)"),
        Status::Repeated(scope) => format!(
            "repeated: a backend said no to this password less than throttle.window ago, \
             remembered {} (no backend asked)",
            scope.describe()
        ),
        Status::Refused(reason) => format!("refused: {reason} (no backend asked)"),
        Status::Error(kind, message) => format!("{kind}: {message}"),
        Status::UnavailableThenNo(message) => format!("unavailable: {message}"),
        Status::Invalid(bad) => format!("invalid: {bad}"),
        Status::Timeout => "timeout: the request deadline expired".to_owned(),
        Status::Panic => "panic: handling the request panicked".to_owned(),
    }
}

pub fn run(cli: &Cli, what: QueryRequest, user: &str, server: &str) -> ExitCode {
    if let Some(e) = field_error("user", user).or_else(|| field_error("server", server)) {
        return fail(EXIT_ERROR, e);
    }
    if user.contains('@') {
        eprintln!(
            "extauth-bridge: note: the XMPP servers send the user part alone; {user:?} contains '@'"
        );
    }
    super::init_command_logging(cli);
    let (config, source) = match load_config(cli) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_ERROR, e),
    };
    // The daemon's handler: the routes, behind the credential cache when it is enabled.
    let handler = match crate::setup::build_handler(&config, &source) {
        Ok(h) => h,
        Err(e) => return fail(EXIT_ERROR, e),
    };
    let password = if what.needs_password() {
        match prompt::password(&format!("Password for {user}@{server}: ")) {
            Ok(p) => p,
            Err(e) => return fail(EXIT_ERROR, e),
        }
    } else {
        Secret::default()
    };
    let account = Account {
        user: user.to_owned(),
        server: server.to_owned(),
    };
    let request = what.request(account, password);
    let runtime = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(EXIT_ERROR, format!("cannot start the async runtime: {e}")),
    };
    let started = Instant::now();
    let outcome = runtime.block_on(handle_request(handler.as_ref(), &request, config.timeout));
    // Work abandoned at the deadline may still hold a blocking thread: do not wait for it.
    runtime.shutdown_background();
    let took = started.elapsed();

    let command = request.command();
    let answer = if outcome.answer { "1 (yes)" } else { "0 (no)" };
    say(format_args!("{command}:{user}:{server} -> {answer}"));
    say(format_args!(
        "backend  {}",
        outcome.backend.as_deref().unwrap_or("-")
    ));
    say(format_args!("why      {}", why(command, &outcome)));
    say(format_args!(
        "took     {} ms (deadline {})",
        millis(took),
        humantime::format_duration(config.timeout)
    ));
    ExitCode::from(exit_status(&outcome))
}
