//! What the XMPP server asks, independent of how it was framed on the wire.
//!
//! Both codecs hand their payload to [`Request::parse`], so the two protocols cannot
//! disagree about field splitting, empty fields or bad bytes.
//!
//! Must not know how a request is answered: that is `outcome.rs`, and backends import
//! this module (for [`Account`]), never the other way round.

use std::borrow::Cow;
use std::fmt;

use crate::secret::Secret;

/// A bare JID split into its parts, as the server sends them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Account {
    pub user: String,
    pub server: String,
}

/// The one normalisation of a user or server name, for everything that compares accounts
/// loosely: the credential cache's account key (and so its eviction) and the users file.
/// Lower case as Unicode defines it (`str::to_lowercase`), which also folds titlecase
/// letters such as `ǅ` (U+01C5), neither upper nor lower case: two places folding by two
/// different rules would let one spelling escape what happens to the other (a removed
/// account still answered from the cache).
///
/// The XMPP servers nodeprep/nameprep JIDs before asking, so this is mostly a no-op; it
/// borrows for names that are ASCII without capitals, which most are.
pub fn normalize_account(part: &str) -> Cow<'_, str> {
    if part
        .bytes()
        .all(|b| b.is_ascii() && !b.is_ascii_uppercase())
    {
        Cow::Borrowed(part)
    } else {
        Cow::Owned(part.to_lowercase())
    }
}

/// [`Account::key`] for parts not (yet) in an [`Account`].
pub fn account_key(user: &str, server: &str) -> String {
    format!("{}@{}", normalize_account(user), normalize_account(server))
}

/// One question from the XMPP server.
#[derive(Debug, Clone)]
pub enum Request {
    Auth(Account, Secret),
    IsUser(Account),
    SetPass(Account, Secret),
    TryRegister(Account, Secret),
    RemoveUser(Account),
    /// Remove only if the password is right.
    RemoveUser3(Account, Secret),
    /// Certificate authentication: recognised so it is logged by name, always answered `0`.
    CertAuth(Account),
}

/// The command name alone, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    Auth,
    IsUser,
    SetPass,
    TryRegister,
    RemoveUser,
    RemoveUser3,
    CertAuth,
}

/// Why a frame could not be turned into a [`Request`]. Answered `0`.
///
/// None of the variants carries the frame's content: a malformed line may well hold a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    #[error("empty request")]
    Empty,
    #[error("request longer than the limit")]
    TooLong,
    #[error("request is not valid UTF-8")]
    InvalidUtf8,
    #[error("request contains a NUL byte")]
    NulByte,
    #[error("unknown command")]
    UnknownCommand,
    #[error("wrong number of fields for the command")]
    FieldCount,
    #[error("empty user or server")]
    EmptyField,
    #[error("control character in user or server")]
    ControlChar,
}

impl Command {
    pub const ALL: [Command; 7] = [
        Command::Auth,
        Command::IsUser,
        Command::SetPass,
        Command::TryRegister,
        Command::RemoveUser,
        Command::RemoveUser3,
        Command::CertAuth,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Auth => "auth",
            Command::IsUser => "isuser",
            Command::SetPass => "setpass",
            Command::TryRegister => "tryregister",
            Command::RemoveUser => "removeuser",
            Command::RemoveUser3 => "removeuser3",
            Command::CertAuth => "certauth",
        }
    }

    fn from_name(name: &str) -> Option<Command> {
        Command::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// Whether the command carries a password as its fourth field.
    fn has_password(self) -> bool {
        matches!(
            self,
            Command::Auth | Command::SetPass | Command::TryRegister | Command::RemoveUser3
        )
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Request {
    /// Parses one frame's payload: `command:user:server[:password]`.
    ///
    /// The payload is split into at most four fields, so a password keeps its colons.
    /// `certauth` carries arbitrary extra data after the server; it is accepted with any tail.
    pub fn parse(frame: &[u8]) -> Result<Request, BadRequest> {
        if frame.is_empty() {
            return Err(BadRequest::Empty);
        }
        if frame.contains(&0) {
            return Err(BadRequest::NulByte);
        }
        let text = std::str::from_utf8(frame).map_err(|_| BadRequest::InvalidUtf8)?;
        let mut fields = text.splitn(4, ':');
        let name = fields.next().unwrap_or_default();
        let command = Command::from_name(name).ok_or(BadRequest::UnknownCommand)?;
        let user = fields.next().ok_or(BadRequest::FieldCount)?;
        let server = fields.next().ok_or(BadRequest::FieldCount)?;
        let password = fields.next();
        match (command.has_password(), password.is_some()) {
            (true, false) => return Err(BadRequest::FieldCount),
            (false, true) if command != Command::CertAuth => return Err(BadRequest::FieldCount),
            _ => {}
        }
        if user.is_empty() || server.is_empty() {
            return Err(BadRequest::EmptyField);
        }
        if user.chars().chain(server.chars()).any(char::is_control) {
            return Err(BadRequest::ControlChar);
        }
        let account = Account {
            user: user.to_owned(),
            server: server.to_owned(),
        };
        let secret = || Secret::new(password.unwrap_or_default());
        Ok(match command {
            Command::Auth => Request::Auth(account, secret()),
            Command::IsUser => Request::IsUser(account),
            Command::SetPass => Request::SetPass(account, secret()),
            Command::TryRegister => Request::TryRegister(account, secret()),
            Command::RemoveUser => Request::RemoveUser(account),
            Command::RemoveUser3 => Request::RemoveUser3(account, secret()),
            Command::CertAuth => Request::CertAuth(account),
        })
    }

    pub fn command(&self) -> Command {
        match self {
            Request::Auth(..) => Command::Auth,
            Request::IsUser(..) => Command::IsUser,
            Request::SetPass(..) => Command::SetPass,
            Request::TryRegister(..) => Command::TryRegister,
            Request::RemoveUser(..) => Command::RemoveUser,
            Request::RemoveUser3(..) => Command::RemoveUser3,
            Request::CertAuth(..) => Command::CertAuth,
        }
    }

    pub fn account(&self) -> &Account {
        match self {
            Request::Auth(a, _)
            | Request::IsUser(a)
            | Request::SetPass(a, _)
            | Request::TryRegister(a, _)
            | Request::RemoveUser(a)
            | Request::RemoveUser3(a, _)
            | Request::CertAuth(a) => a,
        }
    }
}

/// What a decoder yields per frame: a request, or the reason it is answered `0` unasked.
pub type Incoming = Result<Request, BadRequest>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_keeps_its_colons() {
        let r = Request::parse(b"auth:romeo:example.net:a:b::c").unwrap();
        match r {
            Request::Auth(a, p) => {
                assert_eq!(a.user, "romeo");
                assert_eq!(a.server, "example.net");
                assert_eq!(p.expose(), "a:b::c");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn empty_password_is_a_valid_auth_request() {
        assert!(matches!(
            Request::parse(b"auth:romeo:example.net:"),
            Ok(Request::Auth(_, p)) if p.is_empty()
        ));
    }

    #[test]
    fn field_counts_are_checked_per_command() {
        assert_eq!(
            Request::parse(b"auth:romeo:example.net").unwrap_err(),
            BadRequest::FieldCount
        );
        assert_eq!(
            Request::parse(b"isuser:romeo:example.net:x").unwrap_err(),
            BadRequest::FieldCount
        );
        assert_eq!(
            Request::parse(b"isuser:romeo").unwrap_err(),
            BadRequest::FieldCount
        );
        assert!(Request::parse(b"isuser:romeo:example.net").is_ok());
        assert!(Request::parse(b"removeuser:romeo:example.net").is_ok());
        assert!(Request::parse(b"removeuser3:romeo:example.net:pw").is_ok());
        assert!(Request::parse(b"certauth:romeo:example.net:whatever:else").is_ok());
    }

    #[test]
    fn bad_frames_are_classified() {
        assert_eq!(Request::parse(b"").unwrap_err(), BadRequest::Empty);
        assert_eq!(
            Request::parse(b"bogus").unwrap_err(),
            BadRequest::UnknownCommand
        );
        assert_eq!(
            Request::parse(b"AUTH:a:b:c").unwrap_err(),
            BadRequest::UnknownCommand
        );
        assert_eq!(
            Request::parse(b":::").unwrap_err(),
            BadRequest::UnknownCommand
        );
        assert_eq!(
            Request::parse(b"auth:::").unwrap_err(),
            BadRequest::EmptyField
        );
        assert_eq!(
            Request::parse(b"auth:ro\0meo:example.net:x").unwrap_err(),
            BadRequest::NulByte
        );
        assert_eq!(
            Request::parse(b"auth:r\xffmeo:example.net:x").unwrap_err(),
            BadRequest::InvalidUtf8
        );
        assert_eq!(
            Request::parse(b"isuser:ro\rmeo:example.net").unwrap_err(),
            BadRequest::ControlChar
        );
    }

    #[test]
    fn normalisation_folds_every_letter_with_a_lower_case() {
        assert!(matches!(normalize_account("romeo"), Cow::Borrowed("romeo")));
        assert_eq!(normalize_account("Romeo"), "romeo");
        // Titlecase and upper case dž, and a non-ASCII capital.
        assert_eq!(normalize_account("ǅemo"), "ǆemo");
        assert_eq!(normalize_account("Ǆemo"), "ǆemo");
        assert_eq!(normalize_account("ÉTÉ"), "été");
        assert_eq!(account_key("ǅemo", "Example.NET"), "ǆemo@example.net");
    }

    #[test]
    fn control_characters_are_allowed_in_passwords() {
        assert!(Request::parse(b"auth:romeo:example.net:a\rb\tc").is_ok());
    }
}
