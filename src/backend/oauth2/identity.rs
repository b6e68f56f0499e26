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
//! compares the domain too when there is one. A name taken from `email` counts only with
//! `email_verified: true` (and `phone_number` with `phone_number_verified: true`): anyone
//! can type someone else's address into a profile.
//!
//! The user is compared exactly by default: the XMPP servers normalise (nodeprep) the user
//! before asking, and an IdP that keeps `Romeo` and `romeo` apart (django-oauth-toolkit,
//! any case-sensitive user table) has two accounts there. Folding both sides would let
//! one log in as the other. `username_case = "ascii"` is for IdPs whose usernames are
//! case-insensitive: it folds A–Z only. Full Unicode folding is never done: it merges
//! names an IdP keeps apart (`\u{212A}ate`, with KELVIN SIGN, lower-cases to `kate`).
//! Domains are DNS names and always compared ASCII case-insensitively.

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

/// The OIDC claims (Core §5.1) that come with a `*_verified` flag: what a user typed into
/// their profile, which names them only once the IdP has verified it.
const VERIFIED_CLAIMS: &[&str] = &["email", "phone_number"];

/// How the user the IdP names is compared with the requested one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UsernameCase {
    /// Byte for byte.
    #[default]
    Exact,
    /// A–Z and a–z are the same letter; nothing else is folded.
    Ascii,
}

#[derive(Debug, Clone)]
pub struct IdentityRule {
    pub field: String,
    pub mapping: UsernameMapping,
    pub case: UsernameCase,
}

impl IdentityRule {
    /// `Ok` when the claims name `account`; otherwise a short reason for the log.
    pub fn check(&self, claims: &Claims, account: &Account) -> Result<(), &'static str> {
        let (user, domain) = self.identity(claims)?;
        let same = match self.case {
            UsernameCase::Exact => user == account.user,
            UsernameCase::Ascii => user.eq_ignore_ascii_case(&account.user),
        };
        if !same {
            // The servers send lower-case names, so an IdP that keeps `Romeo.M` never matches
            // under `exact`: say what would, for the operator reading the log (earlier
            // versions folded case, so this is what an upgrade shows).
            if user.eq_ignore_ascii_case(&account.user) {
                return Err(
                    "token belongs to another user: the IdP's name differs only in \
                            ASCII case (username_case = \"ascii\" if the IdP's names are \
                            case-insensitive)",
                );
            }
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
        let (source, value) = match claims.get(&self.field) {
            Some(v) => (self.field.as_str(), v),
            None => (
                "username",
                claims.get("username").ok_or("no username claim")?,
            ),
        };
        let name = value.as_str().ok_or("username claim is not a string")?;
        // Only a JSON `true`: a missing claim, `"true"` or `1` is not a verification.
        if VERIFIED_CLAIMS.contains(&source)
            && claims.get(&format!("{source}_verified")) != Some(&Value::Bool(true))
        {
            return Err("identity claim not verified");
        }
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
            case: UsernameCase::Exact,
        }
    }

    fn account(user: &str) -> Account {
        Account {
            user: user.into(),
            server: "example.net".into(),
        }
    }

    #[test]
    fn matching_names() {
        let r = rule(UsernameMapping::Localpart);
        for c in [
            json!({"preferred_username": "romeo"}),
            json!({"preferred_username": "romeo@Example.NET"}),
            json!({"username": "romeo"}),
            json!({"sub": "xmpp:romeo@example.net", "preferred_username": "ignored"}),
            json!({"sub": "xmpp:romeo@EXAMPLE.net"}),
        ] {
            assert_eq!(r.check(&claims(c.clone()), &romeo()), Ok(()), "{c}");
        }
    }

    /// Another account at a case-sensitive IdP, or a Unicode look-alike, is someone else.
    #[test]
    fn names_are_compared_exactly_by_default() {
        let r = rule(UsernameMapping::Localpart);
        for (name, user) in [
            ("Romeo", "romeo"),
            ("ROMEO@example.net", "romeo"),
            ("romeo", "Romeo"),
            ("\u{212A}ate", "kate"),
            ("Kate", "kate"),
            ("stra\u{df}e", "strasse"),
            ("\u{130}nci", "i\u{307}nci"),
        ] {
            let c = claims(json!({ "preferred_username": name }));
            let why = r.check(&c, &account(user));
            assert!(
                why.is_err_and(|why| why.starts_with("token belongs to another user")),
                "{name} as {user}: {why:?}"
            );
        }
        let sub = claims(json!({"sub": "xmpp:Romeo@example.net"}));
        assert!(r.check(&sub, &romeo()).is_err());
    }

    #[test]
    fn a_name_refused_only_for_its_ascii_case_says_so() {
        let r = rule(UsernameMapping::Localpart);
        let c = claims(json!({ "preferred_username": "Romeo.M" }));
        let why = r.check(&c, &account("romeo.m")).unwrap_err();
        assert!(why.contains("username_case = \"ascii\""), "{why}");
        let c = claims(json!({ "preferred_username": "juliet" }));
        assert_eq!(
            r.check(&c, &account("romeo.m")),
            Err("token belongs to another user")
        );
    }

    /// `username_case = "ascii"` folds A-Z only: `Romeo` is `romeo`, but KELVIN SIGN,
    /// `ẞ`/`ß` or a dotted capital I are never folded into an ASCII name.
    #[test]
    fn ascii_folding_folds_ascii_letters_only() {
        let r = IdentityRule {
            case: UsernameCase::Ascii,
            ..rule(UsernameMapping::Localpart)
        };
        for (name, user) in [("Romeo", "romeo"), ("MERCUTIO@example.net", "mercutio")] {
            let c = claims(json!({ "preferred_username": name }));
            assert_eq!(r.check(&c, &account(user)), Ok(()), "{name} as {user}");
        }
        for (name, user) in [
            ("\u{212A}ate", "kate"),
            ("\u{1E9E}", "\u{df}"),
            ("\u{130}", "i"),
            ("\u{c4}", "\u{e4}"),
        ] {
            let c = claims(json!({ "preferred_username": name }));
            assert!(r.check(&c, &account(user)).is_err(), "{name} as {user}");
        }
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
            .check(&claims(json!({"preferred_username": "romeo"})), &romeo())
            .is_ok());
    }

    fn email_rule() -> IdentityRule {
        IdentityRule {
            field: "email".into(),
            ..rule(UsernameMapping::Localpart)
        }
    }

    #[test]
    fn configured_field_wins_over_username() {
        let c = claims(
            json!({"email": "juliet@example.net", "email_verified": true,
                              "username": "romeo"}),
        );
        assert!(email_rule().check(&c, &romeo()).is_err());
    }

    /// An address anyone could have typed into their profile names no one.
    #[test]
    fn an_email_identity_needs_email_verified_true() {
        let r = email_rule();
        let with = |verified: Option<Value>| {
            let mut c = json!({"preferred_username": "mallory", "email": "romeo@example.net"});
            if let Some(v) = verified {
                c["email_verified"] = v;
            }
            r.check(&claims(c), &romeo())
        };
        assert_eq!(with(Some(json!(true))), Ok(()));
        for v in [
            None,
            Some(json!(false)),
            Some(json!("true")),
            Some(json!(1)),
        ] {
            assert_eq!(with(v.clone()), Err("identity claim not verified"), "{v:?}");
        }
        // Other sources of the name are not subject to it.
        let c = claims(json!({"username": "romeo", "email_verified": false}));
        assert_eq!(r.check(&c, &romeo()), Ok(()));
        let c = claims(json!({"sub": "xmpp:romeo@example.net", "email": "juliet@example.net"}));
        assert_eq!(r.check(&c, &romeo()), Ok(()));
    }

    /// The same for the other OIDC claim a user can type: `phone_number`.
    #[test]
    fn a_phone_number_identity_needs_phone_number_verified_true() {
        let r = IdentityRule {
            field: "phone_number".into(),
            mapping: UsernameMapping::AsIs,
            ..rule(UsernameMapping::AsIs)
        };
        let phone = Account {
            user: "+15550100".into(),
            server: "example.net".into(),
        };
        let with = |verified: Value| {
            let c = json!({"phone_number": "+15550100", "phone_number_verified": verified});
            r.check(&claims(c), &phone)
        };
        assert_eq!(with(json!(true)), Ok(()));
        for v in [json!(false), json!("true"), json!(null)] {
            assert_eq!(with(v.clone()), Err("identity claim not verified"), "{v}");
        }
    }
}
