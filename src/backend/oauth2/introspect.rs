//! Token introspection (RFC 7662): ask the IdP whether a token is active and whose it is.
//!
//! The request is client-authenticated like a token request, or carries a configured
//! bearer token instead (django-oauth-toolkit accepts a token with scope `introspection`).
//! `active` must be `true`; `exp` and `nbf` are honoured when present (never required); the
//! optional `iss`, `aud` and scope checks come from the configuration.

use serde_json::Value;

use super::client::Client;
use super::grant::error_code;
use super::identity::{Claims, Verdict};
use super::settings::Settings;
use crate::backend::BackendError;
use crate::secret::Secret;

/// Seconds of clock difference tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;

/// `Ok(Ok(claims))` for an active token that passes the checks, `Ok(Err(reason))` for one
/// that does not, `Err` when the IdP could not be asked.
pub async fn introspect(
    http: &reqwest::Client,
    endpoint: &str,
    client: &Client,
    bearer: Option<&Secret>,
    token: &Secret,
    settings: &Settings,
) -> Result<Verdict, BackendError> {
    let mut form: Vec<(&'static str, String)> = vec![
        ("token", token.expose().to_owned()),
        ("token_type_hint", "access_token".to_owned()),
    ];
    let request = match bearer {
        Some(b) => http.post(endpoint).bearer_auth(b.expose()),
        None => client.apply(http.post(endpoint), &mut form),
    };
    let (status, body) = super::client::send_form(request, form, "introspection").await?;
    if status != reqwest::StatusCode::OK {
        let code = error_code(&body);
        return Err(match status.as_u16() {
            401 | 403 => BackendError::Protocol(format!(
                "introspection: HTTP {status} {code}: the client credentials or bearer were refused"
            )),
            // Only a gateway's "down" falls through: a 500 is the IdP's answer to this token.
            _ => {
                crate::backend::status_error(status, format!("introspection: HTTP {status} {code}"))
            }
        });
    }
    judge_body(&body, settings, now())
}

/// A 200 response's body, judged at time `now` (seconds since the epoch): the claims of an
/// active token that passes the checks, or why not; malformed JSON is a protocol error.
/// Pure, so that the fuzz target `oauth2_json` can drive it.
pub fn judge_body(body: &[u8], settings: &Settings, now: u64) -> Result<Verdict, BackendError> {
    let claims: Claims = serde_json::from_slice(body)
        .map_err(|_| BackendError::Protocol("introspection: malformed JSON".into()))?;
    Ok(judge(claims, settings, now))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A NumericDate (seconds since the epoch). RFC 7519 allows a fraction and some servers
/// send `1.7e9` floats, so a finite non-negative number is accepted and truncated (the
/// fraction cannot matter with 30 s of leeway); negative, non-numeric or non-finite values
/// are malformed. Floats past u64::MAX saturate, like huge integers mean "far future".
fn timestamp(value: &Value) -> Option<u64> {
    match value.as_u64() {
        Some(t) => Some(t),
        None => value
            .as_f64()
            .filter(|t| t.is_finite() && *t >= 0.0)
            .map(|t| t as u64),
    }
}

/// The RFC 7662 checks on a response, at time `now` (seconds since the epoch).
fn judge(claims: Claims, settings: &Settings, now: u64) -> Verdict {
    if claims.get("active") != Some(&Value::Bool(true)) {
        return Err("token not active");
    }
    // A refresh token is a credential for the token endpoint, not a login.
    if claims.get("token_type").and_then(Value::as_str) == Some("refresh_token") {
        return Err("not an access token");
    }
    // Saturating: an `exp` near u64::MAX ("never") must not wrap around into the past.
    if let Some(exp) = claims.get("exp") {
        match timestamp(exp) {
            Some(exp) if exp.saturating_add(LEEWAY_SECS) > now => {}
            Some(_) => return Err("token expired"),
            None => return Err("malformed exp"),
        }
    }
    if let Some(nbf) = claims.get("nbf") {
        match timestamp(nbf) {
            Some(nbf) if nbf <= now.saturating_add(LEEWAY_SECS) => {}
            Some(_) => return Err("token not yet valid"),
            None => return Err("malformed nbf"),
        }
    }
    if let Some(issuer) = &settings.expected_issuer {
        // Only when the IdP says: many introspection endpoints omit `iss`.
        if let Some(iss) = claims.get("iss") {
            if iss.as_str() != Some(issuer.as_str()) {
                return Err("wrong issuer");
            }
        }
    }
    // A token is meant for us when we are among its `aud`, or when it was issued to our
    // client (`client_id`: what the password grant's tokens and many IdPs' tokens carry
    // instead of an `aud`). Neither present is not meant for us.
    if let Some(audience) = &settings.audience {
        let in_aud = match claims.get("aud") {
            Some(Value::String(a)) => a == audience,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(audience)),
            _ => false,
        };
        let our_client = claims.get("client_id").and_then(Value::as_str) == Some(audience.as_str());
        if !in_aud && !our_client {
            return Err("wrong audience");
        }
    }
    if !settings.required_scope.is_empty() {
        let granted = claims.get("scope").and_then(Value::as_str).unwrap_or("");
        let granted: Vec<&str> = granted.split_whitespace().collect();
        if !settings
            .required_scope
            .iter()
            .all(|s| granted.contains(&s.as_str()))
        {
            return Err("missing required scope");
        }
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> Settings {
        Settings::introspected_tokens(
            Some("bridge".into()),
            Some("https://idp.example".into()),
            vec!["xmpp".into()],
        )
    }

    fn check(v: Value) -> Verdict {
        judge(v.as_object().unwrap().clone(), &settings(), 1_000_000)
    }

    #[test]
    fn rfc7662_checks() {
        let good = json!({"active": true, "scope": "openid xmpp", "aud": ["x", "bridge"],
                          "iss": "https://idp.example", "exp": 1_000_100, "nbf": 999_000});
        assert!(check(good.clone()).is_ok());
        let with = |k: &str, v: Value| {
            let mut g = good.clone();
            g[k] = v;
            check(g)
        };
        assert_eq!(with("active", json!(false)), Err("token not active"));
        assert_eq!(with("active", json!("true")), Err("token not active"));
        assert_eq!(
            with("token_type", json!("refresh_token")),
            Err("not an access token")
        );
        assert!(with("token_type", json!("Bearer")).is_ok());
        assert_eq!(with("exp", json!(999_000)), Err("token expired"));
        assert_eq!(with("nbf", json!(1_000_100)), Err("token not yet valid"));
        assert_eq!(with("iss", json!("https://evil")), Err("wrong issuer"));
        assert_eq!(with("aud", json!("other")), Err("wrong audience"));
        assert_eq!(
            with("scope", json!("openid")),
            Err("missing required scope")
        );
        assert_eq!(with("scope", json!("xmppx")), Err("missing required scope"));
        assert!(check(json!({"active": true, "scope": "xmpp", "client_id": "bridge"})).is_ok());
        assert!(check(
            json!({"active": true, "scope": "xmpp", "aud": "other", "client_id": "bridge"})
        )
        .is_ok());
        for other in [
            json!({"active": true, "scope": "xmpp", "client_id": "other-app"}),
            json!({"active": true, "scope": "xmpp", "aud": ["x"], "client_id": "other-app"}),
            json!({"active": true, "scope": "xmpp", "aud": 7}),
            json!({"active": true, "scope": "xmpp"}),
        ] {
            assert_eq!(check(other.clone()), Err("wrong audience"), "{other}");
        }
        assert_eq!(check(json!({})), Err("token not active"));
    }

    #[test]
    fn huge_exp_and_nbf_do_not_overflow() {
        let base = json!({"active": true, "scope": "xmpp", "aud": "bridge"});
        let with = |k: &str, v: Value| {
            let mut c = base.as_object().unwrap().clone();
            c.insert(k.into(), v);
            c
        };
        // `exp + leeway` would overflow: a token valid for ever, not one expired in 1970.
        assert!(judge(with("exp", json!(u64::MAX)), &settings(), 1_000_000).is_ok());
        assert!(judge(
            with("exp", json!(u64::MAX - 10)),
            &settings(),
            u64::MAX - 20
        )
        .is_ok());
        // `now + leeway` would overflow.
        assert!(judge(with("nbf", json!(5)), &settings(), u64::MAX).is_ok());
        assert_eq!(
            judge(with("exp", json!(5)), &settings(), u64::MAX),
            Err("token expired")
        );
    }

    #[test]
    fn float_timestamps_are_truncated() {
        assert!(
            check(json!({"active": true, "scope": "xmpp", "aud": "bridge",
                             "exp": 1_000_100.9, "nbf": 999_000.5}))
            .is_ok()
        );
        let with = |k: &str, v: Value| {
            let mut c = json!({"active": true, "scope": "xmpp", "aud": "bridge"});
            c[k] = v;
            check(c)
        };
        assert!(with("exp", json!(1.7e9)).is_ok());
        assert_eq!(with("exp", json!(999_000.9)), Err("token expired"));
        assert_eq!(with("nbf", json!(1.7e9)), Err("token not yet valid"));
        assert!(with("nbf", json!(1_000_029.9)).is_ok());
        assert!(with("exp", json!(1e300)).is_ok());
        for bad in [json!(-1.5), json!(-1), json!("1700000000"), json!(null)] {
            assert_eq!(with("exp", bad.clone()), Err("malformed exp"), "{bad}");
            assert_eq!(with("nbf", bad.clone()), Err("malformed nbf"), "{bad}");
        }
    }
}
