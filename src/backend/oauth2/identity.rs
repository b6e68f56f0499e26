//! Whose credential is it? The identity check every OAuth2 path ends with.
//!
//! An IdP happily says "this token is valid" for any of its users, so a valid token is not
//! enough: the user it belongs to must be the user the XMPP server asked about. The name
//! is taken, in this order, from
//! 1. `sub` of the form `xmpp:user@host` (what Prosody's mod_http_oauth2 returns): the
//!    domain is always compared;
//! 2. the configured `username_field` (default `preferred_username`);
//! 3. `username` (RFC 7662 introspection responses).
//!
//! and mapped: `as_is` compares the whole value, `localpart` splits at the last `@` and
//! compares the domain too when there is one. Both sides are case-folded (the XMPP servers
//! nodeprep the user before asking; IdPs often keep the case a user registered with).

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::request::Account;

/// Claims from userinfo, introspection or a JWT.
pub type Claims = Map<String, Value>;

/// What a validation step concluded: the claims of a credential it accepts, or a short
/// reason (for the log, never containing the credential) why it refused it.
pub type Verdict = Result<Claims, &'static str>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsernameMapping {
    /// The claim is the XMPP localpart itself.
    AsIs,
    /// The claim may be `user@domain`; the part before the last `@` is the localpart and
    /// the domain, when present, must be the request's server.
    #[default]
    Localpart,
}

#[derive(Debug, Clone)]
pub struct IdentityRule {
    pub field: String,
    pub mapping: UsernameMapping,
}

impl IdentityRule {
    /// `Ok` when the claims name `account`; otherwise a short reason for the log.
    pub fn check(&self, claims: &Claims, account: &Account) -> Result<(), &'static str> {
        let (user, domain) = self.identity(claims)?;
        if !fold_eq(&user, &account.user) {
            return Err("token belongs to another user");
        }
        match domain {
            Some(d) if !d.eq_ignore_ascii_case(&account.server) => {
                Err("token belongs to another domain")
            }
            _ => Ok(()),
        }
    }

    /// The `(localpart, domain)` the claims name.
    fn identity(&self, claims: &Claims) -> Result<(String, Option<String>), &'static str> {
        if let Some(jid) = claims
            .get("sub")
            .and_then(Value::as_str)
            .and_then(|s| s.strip_prefix("xmpp:"))
        {
            return match jid.rsplit_once('@') {
                Some((user, host)) if !user.is_empty() && !host.is_empty() => {
                    Ok((user.to_owned(), Some(host.to_owned())))
                }
                _ => Err("malformed xmpp: subject"),
            };
        }
        let name = claims
            .get(&self.field)
            .or_else(|| claims.get("username"))
            .ok_or("no username claim")?
            .as_str()
            .ok_or("username claim is not a string")?;
        if name.is_empty() {
            return Err("empty username claim");
        }
        match self.mapping {
            UsernameMapping::AsIs => Ok((name.to_owned(), None)),
            UsernameMapping::Localpart => match name.rsplit_once('@') {
                Some((user, host)) if !user.is_empty() && !host.is_empty() => {
                    Ok((user.to_owned(), Some(host.to_owned())))
                }
                Some(_) => Err("malformed user@domain claim"),
                None => Ok((name.to_owned(), None)),
            },
        }
    }
}

/// Case-insensitive comparison with full Unicode lower-casing (`Ä` = `ä`).
fn fold_eq(a: &str, b: &str) -> bool {
    a == b || a.to_lowercase() == b.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Claims {
        v.as_object().unwrap().clone()
    }

    fn romeo() -> Account {
        Account {
            user: "romeo".into(),
            server: "example.net".into(),
        }
    }

    fn rule(mapping: UsernameMapping) -> IdentityRule {
        IdentityRule {
            field: "preferred_username".into(),
            mapping,
        }
    }

    #[test]
    fn matching_names() {
        let r = rule(UsernameMapping::Localpart);
        for c in [
            json!({"preferred_username": "romeo"}),
            json!({"preferred_username": "Romeo"}),
            json!({"preferred_username": "romeo@Example.NET"}),
            json!({"username": "romeo"}),
            json!({"sub": "xmpp:romeo@example.net", "preferred_username": "ignored"}),
        ] {
            assert_eq!(r.check(&claims(c.clone()), &romeo()), Ok(()), "{c}");
        }
        let mercutio = Account {
            user: "mercutio".into(),
            server: "example.net".into(),
        };
        assert!(r
            .check(
                &claims(json!({"preferred_username": "MERCUTIO"})),
                &mercutio
            )
            .is_ok());
    }

    #[test]
    fn someone_else_is_refused() {
        let r = rule(UsernameMapping::Localpart);
        for c in [
            json!({"preferred_username": "juliet"}),
            json!({"preferred_username": "romeo@evil.example"}),
            json!({"preferred_username": "romeox"}),
            json!({"sub": "xmpp:romeo@other.example", "preferred_username": "romeo"}),
            json!({"sub": "xmpp:juliet@example.net", "preferred_username": "romeo"}),
            json!({"sub": "xmpp:@example.net"}),
            json!({"sub": "romeo"}),
            json!({"preferred_username": 7}),
            json!({"preferred_username": ""}),
            json!({"preferred_username": "@example.net"}),
            json!({}),
        ] {
            assert!(r.check(&claims(c.clone()), &romeo()).is_err(), "{c}");
        }
        let as_is = rule(UsernameMapping::AsIs);
        assert!(as_is
            .check(
                &claims(json!({"preferred_username": "romeo@example.net"})),
                &romeo()
            )
            .is_err());
        assert!(as_is
            .check(&claims(json!({"preferred_username": "ROMEO"})), &romeo())
            .is_ok());
    }

    #[test]
    fn configured_field_wins_over_username() {
        let r = IdentityRule {
            field: "email".into(),
            mapping: UsernameMapping::Localpart,
        };
        let c = claims(json!({"email": "juliet@example.net", "username": "romeo"}));
        assert!(r.check(&c, &romeo()).is_err());
    }
}
