//! [`Settings`]: what a request needs from the configuration, read by the flows (grant,
//! introspection, identity). Built once by `OAuth2Backend::new`; holds no secret and does
//! no I/O.

use super::config::{
    default_scope, default_username_field, IsUserPolicy, Mode, UsernameFormat, Validate, Verify,
};
use super::identity::{IdentityRule, UsernameCase, UsernameMapping};

/// The settings a request needs, shared by the submodules.
pub struct Settings {
    pub mode: Mode,
    pub scope: String,
    pub username_format: UsernameFormat,
    pub verify: Verify,
    pub validate: Validate,
    pub token_prefixes: Vec<String>,
    pub identity: IdentityRule,
    pub required_scope: Vec<String>,
    pub audience: Option<String>,
    /// The `iss` required of introspection responses and JWTs, when checked.
    pub expected_issuer: Option<String>,
    pub isuser: IsUserPolicy,
}

impl Settings {
    /// `mode = "token"` with introspection, judged with `audience`, `expected_issuer` and
    /// `required_scope`, names compared exactly: what the unit tests and the fuzz target
    /// `oauth2_json` check responses against, without a configuration file.
    pub fn introspected_tokens(
        audience: Option<String>,
        expected_issuer: Option<String>,
        required_scope: Vec<String>,
    ) -> Settings {
        Settings {
            mode: Mode::Token,
            scope: default_scope(),
            username_format: UsernameFormat::Localpart,
            verify: Verify::Introspection,
            validate: Validate::Introspection,
            token_prefixes: Vec::new(),
            identity: IdentityRule {
                field: default_username_field(),
                mapping: UsernameMapping::Localpart,
                case: UsernameCase::Exact,
            },
            required_scope,
            audience,
            expected_issuer,
            isuser: IsUserPolicy::Next,
        }
    }
}
