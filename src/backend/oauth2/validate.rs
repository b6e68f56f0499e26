//! The configuration becomes a backend: `OAuth2Backend::new` resolves the secrets, checks the
//! keys against each other and the mode (every error names its key, [`KeyError`]), and
//! builds the [`Settings`], the client credentials, discovery and the JWKS cache. Nothing is
//! fetched here (the IdP may be down while we start), and nothing after start-up comes back
//! here.

use std::path::PathBuf;

use super::client::{build_http_client, endpoint_url, is_token_syntax, Client};
use super::config::{
    ClientAuth, KeyError, Mode, OAuth2BackendConfig, Validate, Verify, ANY_AUDIENCE,
};
use super::discovery::{Discovery, Endpoints, Needed};
use super::identity::IdentityRule;
use super::jwt::{self, JwksCache};
use super::settings::Settings;
use super::OAuth2Backend;
use crate::backend::net::BuiltOnce;
use crate::secret::Secret;

/// Reads a secret given inline, in a file or in an environment variable (at most one).
fn resolve_secret(
    keys: [&'static str; 3],
    inline: &Option<Secret>,
    path: &Option<PathBuf>,
    env: &Option<String>,
) -> Result<Option<Secret>, KeyError> {
    crate::secret::resolve(keys, inline.as_ref(), path.as_deref(), env.as_deref())
        .map_err(|(key, message)| (key.to_owned(), message))
}

/// Tokens as passwords must be meant for us (SPEC §10): an IdP issues tokens to every
/// client of its realm, and without a binding a token another application obtained (a
/// game, a wiki, anything its user logged into) would log in here. So `audience` is
/// required with `mode = "token"`/`"auto"`, or the operator writes `"any"`. Userinfo
/// answers who the token belongs to, not whom it was issued to: a real audience there
/// would be a check that is silently not made, so only `"any"` is accepted with it.
fn check_audience(config: &OAuth2BackendConfig) -> Result<(), KeyError> {
    let err = |m: &str| ("audience".to_owned(), m.to_owned());
    match config.audience.as_deref() {
        None => Err(err(
            "required with mode = \"token\" or \"auto\": the `aud` (or, at introspection, the `client_id`) of tokens meant for this service, often its client_id; or audience = \"any\" to accept a token issued to any client of the IdP",
        )),
        Some("") => Err(err("must not be empty")),
        Some(a) if a != ANY_AUDIENCE && config.validate == Validate::Userinfo => Err(err(
            "validate = \"userinfo\" cannot check whom a token was issued to: use introspection or jwt, or write audience = \"any\" to accept tokens issued to any client",
        )),
        Some(_) => Ok(()),
    }
}

/// The audience to check, `None` when any is accepted (or none was configured).
fn audience_to_check(config: &OAuth2BackendConfig) -> Option<String> {
    config.audience.clone().filter(|a| a != ANY_AUDIENCE)
}

/// Plain http is fine on loopback (a local IdP, the tests), nowhere else.
fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or("");
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl OAuth2Backend {
    /// Builds the backend from its configuration. Nothing is fetched here: the IdP may be
    /// down while we start.
    pub fn new(config: &OAuth2BackendConfig) -> Result<OAuth2Backend, KeyError> {
        let err = |k: &str, m: &str| (k.to_owned(), m.to_owned());
        let client_secret = resolve_secret(
            ["client_secret", "client_secret_file", "client_secret_env"],
            &config.client_secret,
            &config.client_secret_file,
            &config.client_secret_env,
        )?;
        let introspection_bearer = resolve_secret(
            [
                "introspection_bearer",
                "introspection_bearer_file",
                "introspection_bearer_env",
            ],
            &config.introspection_bearer,
            &config.introspection_bearer_file,
            &config.introspection_bearer_env,
        )?;
        // Sent as `Authorization: Bearer`: one that cannot be, fails at start-up rather than
        // turning every login into a request that cannot be built.
        if introspection_bearer
            .as_ref()
            .is_some_and(|b| !is_token_syntax(b.expose()))
        {
            return Err(err(
                "introspection_bearer",
                "must be visible ASCII characters only (no spaces or control characters)",
            ));
        }
        for (k, url) in [
            ("issuer", &config.issuer),
            ("token_endpoint", &config.token_endpoint),
            ("introspection_endpoint", &config.introspection_endpoint),
            ("userinfo_endpoint", &config.userinfo_endpoint),
            ("jwks_uri", &config.jwks_uri),
        ] {
            if let Some(u) = url {
                let parsed = endpoint_url(u).map_err(|m| err(k, &m))?;
                if parsed.scheme() == "http" && !is_loopback(&parsed) {
                    tracing::warn!(backend = %config.name, key = k, url = %u, "plain http: passwords and tokens would cross the network unencrypted");
                }
            }
        }
        let needs = |explicit: &Option<String>, what: &str| -> Result<(), KeyError> {
            if explicit.is_none() && config.issuer.is_none() {
                return Err(err(
                    what,
                    "required (or set issuer for discovery) for this mode",
                ));
            }
            Ok(())
        };
        let grant = matches!(config.mode, Mode::PasswordGrant | Mode::Auto);
        let token = matches!(config.mode, Mode::Token | Mode::Auto);
        let uses_introspection = (grant && config.verify == Verify::Introspection)
            || (token && config.validate == Validate::Introspection);
        let uses_userinfo = (grant && config.verify == Verify::Userinfo)
            || (token && config.validate == Validate::Userinfo);
        let uses_jwt = token && config.validate == Validate::Jwt;
        if grant {
            needs(&config.token_endpoint, "token_endpoint")?;
            if config.client_id.is_none() {
                return Err(err("client_id", "required for the password grant"));
            }
        }
        if uses_introspection {
            needs(&config.introspection_endpoint, "introspection_endpoint")?;
            if introspection_bearer.is_none() && client_secret.is_none() {
                return Err(err(
                    "introspection_bearer",
                    "introspection needs client credentials (client_secret) or a bearer token",
                ));
            }
        }
        if uses_userinfo {
            needs(&config.userinfo_endpoint, "userinfo_endpoint")?;
        }
        if uses_jwt {
            needs(&config.jwks_uri, "jwks_uri")?;
            if config.issuer.is_none() && config.check_issuer {
                return Err(err(
                    "issuer",
                    "required to check the `iss` of JWTs (or set check_issuer = false)",
                ));
            }
        }
        if token {
            check_audience(config)?;
        }
        if config.client_auth != ClientAuth::None
            && client_secret.is_none()
            && config.client_id.is_some()
        {
            return Err(err(
                "client_secret",
                "required with client_auth = \"basic\" or \"post\" (use client_auth = \"none\" for a public client)",
            ));
        }
        if config.scope.contains(['\r', '\n']) {
            return Err(err("scope", "must be one line"));
        }
        if config.username_field.is_empty() {
            return Err(err("username_field", "must not be empty"));
        }
        let algorithms =
            jwt::parse_algorithms(&config.algorithms).map_err(|m| err("algorithms", &m))?;
        for (k, d) in [
            ("connect_timeout", config.connect_timeout),
            ("request_timeout", config.request_timeout),
            ("discovery_refresh", config.discovery_refresh),
            ("jwks_refresh", config.jwks_refresh),
        ] {
            if d.is_zero() {
                return Err(err(k, "must be greater than zero"));
            }
        }
        if let Some(ca) = &config.ca_file {
            if !ca.is_file() {
                return Err(err(
                    "ca_file",
                    &format!("{} is not a readable file", ca.display()),
                ));
            }
        }
        let explicit = Endpoints {
            token: config.token_endpoint.clone(),
            introspection: config.introspection_endpoint.clone(),
            userinfo: config.userinfo_endpoint.clone(),
            jwks_uri: config.jwks_uri.clone(),
        };
        let needed = Needed {
            token: grant,
            introspection: uses_introspection,
            userinfo: uses_userinfo,
            jwks_uri: uses_jwt,
        };
        let expected_issuer = config.issuer.clone().filter(|_| config.check_issuer);
        Ok(OAuth2Backend {
            name: config.name.clone(),
            settings: Settings {
                mode: config.mode,
                scope: config.scope.clone(),
                username_format: config.username_format,
                verify: config.verify,
                validate: config.validate,
                token_prefixes: config.token_prefixes.clone(),
                identity: IdentityRule {
                    field: config.username_field.clone(),
                    mapping: config.username_mapping,
                    case: config.username_case,
                },
                required_scope: config
                    .required_scope
                    .as_deref()
                    .unwrap_or("")
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect(),
                audience: audience_to_check(config),
                expected_issuer: expected_issuer.clone(),
                isuser: config.isuser,
            },
            client: Client {
                id: config.client_id.clone(),
                secret: client_secret,
                auth: config.client_auth,
            },
            introspection_bearer,
            http: {
                let ca_file = config.ca_file.clone();
                let (connect, request) = (config.connect_timeout, config.request_timeout);
                BuiltOnce::new(move || build_http_client(ca_file.as_deref(), connect, request))
            },
            discovery: Discovery::new(
                config.issuer.clone(),
                explicit,
                needed,
                config.discovery_refresh,
            ),
            jwks: JwksCache::new(
                algorithms,
                expected_issuer,
                audience_to_check(config),
                config.jwks_refresh,
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendConfig, Config, ConfigError};

    fn build(body: &str) -> Result<OAuth2Backend, ConfigError> {
        let text = format!("[[backend]]\nname = \"idp\"\ntype = \"oauth2\"\n{body}");
        let config = Config::parse(&text, "c.toml")?;
        match &config.backends[0] {
            BackendConfig::Oauth2(c) => OAuth2Backend::new(c)
                .map_err(|(k, m)| ConfigError::new("c.toml", format!("backend[0].{k}"), m)),
            _ => unreachable!(),
        }
    }

    fn key_of(body: &str) -> String {
        match build(body) {
            Ok(_) => panic!("accepted: {body}"),
            Err(e) => e.key,
        }
    }

    #[test]
    fn configuration_errors_name_the_key() {
        let issuer = "issuer = \"https://idp.example\"\n";
        assert!(build(&format!(
            "{issuer}client_id = \"c\"\nclient_auth = \"none\""
        ))
        .is_ok());
        assert_eq!(key_of(issuer), "backend[0].client_id");
        assert_eq!(
            key_of("client_id = \"c\"\nclient_auth = \"none\""),
            "backend[0].token_endpoint"
        );
        assert_eq!(
            key_of(&format!("{issuer}client_id = \"c\"")),
            "backend[0].client_secret"
        );
        assert_eq!(
            key_of(&format!(
                "{issuer}client_id = \"c\"\nclient_secret = \"s\"\nclient_secret_env = \"X\""
            )),
            "backend[0].client_secret"
        );
        assert_eq!(
            key_of(&format!(
                "{issuer}client_id = \"c\"\nclient_secret_env = \"EXTAUTH_TEST_UNSET_VARIABLE\""
            )),
            "backend[0].client_secret_env"
        );
        assert_eq!(
            key_of(&format!(
                "{issuer}mode = \"token\"\nvalidate = \"jwt\"\naudience = \"a\"\nalgorithms = [\"HS256\"]"
            )),
            "backend[0].algorithms"
        );
        assert_eq!(
            key_of(&format!("{issuer}mode = \"token\"\nvalidate = \"jwt\"")),
            "backend[0].audience"
        );
        for mode in ["token", "auto"] {
            let base = format!(
                "{issuer}client_id = \"c\"\nclient_auth = \"none\"\nmode = \"{mode}\"\n\
                 introspection_bearer = \"b\"\n"
            );
            for validate in ["introspection", "userinfo", "jwt"] {
                let v = format!("{base}validate = \"{validate}\"\n");
                assert_eq!(key_of(&v), "backend[0].audience", "{v}");
                assert_eq!(
                    key_of(&format!("{v}audience = \"\"")),
                    "backend[0].audience"
                );
                assert!(build(&format!("{v}audience = \"any\"")).is_ok(), "{v}");
                let bound = build(&format!("{v}audience = \"bridge\""));
                if validate == "userinfo" {
                    assert_eq!(
                        bound.err().map(|e| e.key).as_deref(),
                        Some("backend[0].audience")
                    );
                } else {
                    assert!(bound.is_ok(), "{v}");
                }
            }
        }
        // The password grant's own tokens are ours: no audience needed.
        assert!(build(&format!(
            "{issuer}client_id = \"c\"\nclient_auth = \"none\"\nverify = \"userinfo\""
        ))
        .is_ok());
        assert_eq!(
            key_of(&format!(
                "{issuer}client_id = \"c\"\nclient_auth = \"none\"\nmode = \"auto\"\nvalidate = \"jwt\""
            )),
            "backend[0].audience"
        );
        assert!(build(&format!(
            "{issuer}mode = \"token\"\nvalidate = \"jwt\"\naudience = \"a\""
        ))
        .is_ok());
        assert_eq!(
            key_of("mode = \"token\"\nvalidate = \"jwt\"\njwks_uri = \"https://idp.example/jwks\""),
            "backend[0].issuer"
        );
        assert_eq!(
            key_of(&format!(
                "{issuer}mode = \"token\"\nvalidate = \"introspection\""
            )),
            "backend[0].introspection_bearer"
        );
        assert_eq!(
            key_of("issuer = \"ftp://x\"\nmode = \"token\"\nvalidate = \"userinfo\""),
            "backend[0].issuer"
        );
        assert_eq!(
            key_of(&format!("{issuer}mode = \"tokens\"")),
            "backend[0].mode"
        );
        assert_eq!(
            key_of(&format!("{issuer}client_secret_cli = \"x\"")),
            "backend[0].client_secret_cli"
        );
    }

    #[test]
    fn secrets_from_a_file_lose_the_trailing_newline_and_never_print() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "s3cr:et&+%\n").unwrap();
        let b = build(&format!(
            "issuer = \"https://idp.example\"\nclient_id = \"c\"\nclient_secret_file = \"{}\"",
            path.display()
        ))
        .unwrap();
        let secret = b.client.secret.as_ref().unwrap();
        assert_eq!(secret.expose(), "s3cr:et&+%");
        assert!(!format!("{:?}", b.client).contains("s3cr"));
    }

    #[test]
    fn loopback_hosts() {
        for (u, want) in [
            ("http://127.0.0.1:8000/o", true),
            ("http://[::1]/", true),
            ("http://LocalHost/", true),
            ("http://idp.example/", false),
            ("http://10.0.0.1/", false),
        ] {
            assert_eq!(is_loopback(&reqwest::Url::parse(u).unwrap()), want, "{u}");
        }
    }

    #[test]
    fn tokens_are_visible_ascii() {
        for good in [
            "secret-token:abc",
            "eyJ.a.b",
            "a~+/=",
            "!\"#$%&'()*,;<>?@[\\]^`{|}",
        ] {
            assert!(is_token_syntax(good), "{good:?}");
        }
        for bad in [
            "",
            "a b",
            "a\tb",
            "a\u{1}",
            "a\u{7f}",
            "caf\u{e9}",
            "a\r\nb",
        ] {
            assert!(!is_token_syntax(bad), "{bad:?}");
        }
        let issuer = "issuer = \"https://idp.example\"\nmode = \"token\"\naudience = \"a\"\n";
        assert_eq!(
            key_of(&format!("{issuer}introspection_bearer = \"x\\u0001y\"")),
            "backend[0].introspection_bearer"
        );
        assert!(build(&format!("{issuer}introspection_bearer = \"x:y\"")).is_ok());
    }
}
