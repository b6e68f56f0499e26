//! Command-line definitions. Every option here can also be set in the configuration file;
//! the command line wins.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{LogFormat, LogLevel, LogTarget};
use crate::protocol::Protocol;

#[derive(Debug, Parser)]
#[command(
    name = "extauth-bridge",
    version,
    about = "External authentication for Prosody and ejabberd: users file, HTTP API, OAuth2/OIDC",
    long_about = "External authentication for Prosody and ejabberd.\n\n\
        Started by the XMPP server (Prosody: external_auth_command, ejabberd: extauth_program), \
        it reads requests on stdin and writes 1/0 replies on stdout. Without a subcommand it runs \
        that loop. Logs go to stderr or a file, never to stdout.\n\n\
        The configuration is read from --config, else $EXTAUTH_BRIDGE_CONFIG, else \
        /etc/extauth-bridge/config.toml (Prosody passes no arguments). With --users or \
        --http-url the default file is not read: only a file named by --config or \
        $EXTAUTH_BRIDGE_CONFIG applies."
)]
pub struct Cli {
    /// Configuration file [default: $EXTAUTH_BRIDGE_CONFIG, else /etc/extauth-bridge/config.toml,
    /// except with --users or --http-url]
    #[arg(long, short = 'c', value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    /// Wire protocol [default: the config's `protocol`, else auto]
    #[arg(long, value_enum, value_name = "PROTOCOL")]
    pub protocol: Option<Protocol>,

    /// Deadline per request, e.g. 4s or 500ms [default: the config's `timeout`, else 4s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// Use this users file as the only backend (no configuration file needed; the default
    /// file is not read, only --config or $EXTAUTH_BRIDGE_CONFIG)
    #[arg(long, value_name = "PATH", global = true)]
    pub users: Option<PathBuf>,

    /// Use this mod_auth_http API (base URL, `$host` allowed) as a backend, with default
    /// settings (no configuration file needed; the default file is not read, only --config or
    /// $EXTAUTH_BRIDGE_CONFIG). With --users too, the API is asked first and the users file
    /// answers what the API does not support (HTTP 501)
    #[arg(long, value_name = "URL", global = true)]
    pub http_url: Option<String>,

    /// Log level [default: the config's `log.level`, else info]
    #[arg(long, value_enum, value_name = "LEVEL")]
    pub log_level: Option<LogLevel>,

    /// Log format [default: the config's `log.format`, else text]
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Log destination [default: the config's `log.target`, else auto: stderr, or under a
    /// Prosody pty the log file, else journald if running, else nothing]
    #[arg(long, value_enum, value_name = "TARGET")]
    pub log_target: Option<LogTarget>,

    /// Log file, used with --log-target file (and under a Prosody pty)
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,

    /// Prosody pty mode: raw mode, drop queries waiting at start-up, no logs on stderr
    /// [default: the config's `pty`, else auto: on when stdin is a terminal that is not our
    /// controlling terminal]
    #[arg(long, value_enum, value_name = "MODE")]
    pub pty: Option<crate::pty::PtyMode>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Answer requests on stdin/stdout (the default)
    Run,
    /// Read one password line from stdin and print its argon2id hash (PHC string)
    ///
    /// For a users file line `user@domain:HASH`.
    HashPassword,
    /// Validate the configuration and reach every backend, as the daemon would
    ///
    /// Also reports what bites under the XMPP server: permissions, the user, relative paths,
    /// proxies, timeouts, where logs go. Exit 0 when all is well, 1 when a backend or the
    /// environment is broken, 2 for a configuration error.
    Check {
        /// Print one JSON object instead of the human report
        #[arg(long)]
        json: bool,
    },
    /// Ask one question through the configured routes, exactly as the daemon would
    ///
    /// Prints the answer, the backend that gave it, why, and how long it took. The password
    /// is read from the terminal without echo, or as one line from piped stdin. Exit 0 for
    /// yes, 1 for no, 2 for an error (configuration, backend, timeout).
    Query {
        /// The request to send
        #[arg(value_enum)]
        request: QueryRequest,
        /// The user part of the account (what the XMPP server sends: no @domain)
        user: String,
        /// The server (XMPP domain) of the account
        server: String,
    },
    /// Manage a users file (`user@domain:HASH` lines)
    ///
    /// Atomic rewrites under the same lock the daemon takes, safe while it runs. Exit 0 ok,
    /// 1 no such user / already exists, 2 usage error.
    Users {
        #[command(subcommand)]
        action: UsersAction,
    },
    /// Write the man page or shell completions (for packaging)
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        what: GenerateWhat,
    },
}

/// The requests `query` can send: the daemon's commands that reach a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueryRequest {
    Auth,
    Isuser,
    Setpass,
    Tryregister,
    Removeuser,
    Removeuser3,
}

#[derive(Debug, Subcommand)]
pub enum UsersAction {
    /// Add an account; the password is prompted for without echo (or read from piped stdin)
    Add {
        file: PathBuf,
        /// user@domain
        account: String,
    },
    /// Change an account's password
    Passwd {
        file: PathBuf,
        /// user@domain
        account: String,
    },
    /// Remove an account
    Remove {
        file: PathBuf,
        /// user@domain
        account: String,
    },
    /// List the accounts (never the hashes)
    List { file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum GenerateWhat {
    /// Write extauth-bridge.1 (and one page per subcommand) into DIR
    Man { dir: PathBuf },
    /// Write the completion script for SHELL into DIR
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
        dir: PathBuf,
    },
    /// Write a new [shared].key_file (mode 0600; never overwrites): copy it to every node
    SharedKey { file: PathBuf },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}
