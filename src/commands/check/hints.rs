//! What to do about a failure, from its key and its words: one line under the failure.

use crate::config::ConfigError;

/// What to do about a configuration error, from its key and message.
pub(super) fn hint(e: &ConfigError) -> &'static str {
    let m = e.message.as_str();
    let has = |s: &str| m.contains(s);
    if e.key == "(file)" && (has("not found") || has("No such file")) {
        "create it (see examples/config.toml) or name it with --config FILE or $EXTAUTH_BRIDGE_CONFIG; \
         Prosody passes no arguments, so under Prosody only the default path or the environment work"
    } else if has("Permission denied") {
        "make it readable by the XMPP server's account, e.g. chgrp prosody FILE && chmod 640 FILE, \
         and check every directory above it is searchable"
    } else if has("unknown field") {
        "a misspelt or misplaced key: the Keys table in README.md lists every key"
    } else if has("missing field") {
        "this key is required here: see the Keys table in README.md"
    } else if has("unknown variant") {
        "use one of the values the message lists"
    } else if has("invalid duration") {
        "write durations like \"4s\", \"500ms\" or \"1m 30s\""
    } else if has("duplicate backend name") {
        "give every [[backend]] its own name"
    } else if has("no backend named") {
        "a route's backends must be names of [[backend]] tables, spelt the same"
    } else if has("no [[backend]]") {
        "add a [[backend]] table (see examples/config.toml) or run with --users FILE"
    } else if has("domain pattern") {
        "domains are \"example.org\" or \"*.example.org\" (any subdomain)"
    } else if has("invalid type") {
        "the value has the wrong type: strings need quotes, lists need [ ]"
    } else if e.line.is_some() {
        "a TOML syntax error at that line: check quotes, brackets and `=`"
    } else {
        "see the Keys table in README.md"
    }
}
/// What to try for a backend failure, from the words of its error.
pub(super) fn backend_hint(detail: &str) -> Option<&'static str> {
    let d = detail.to_lowercase();
    let has = |s: &str| d.contains(s);
    Some(if has("permission denied") {
        "the XMPP server's account must be able to read it (and write it for setpass/tryregister/\
         removeuser): check owner, group and mode, and every directory above; run check as that account"
    } else if has("no such file") {
        "the path does not exist here; use an absolute path, and check it on the XMPP server's host"
    } else if has("no answer within") || has("timed out") || has("timeout") {
        "too slow or unreachable: check the network path from this host and account, or raise `timeout` \
         (staying below the XMPP server's own timeout)"
    } else if has("certificate") || has("tls") {
        "TLS failed: check the server's certificate chain, or configure the CA file the backend needs"
    } else if has("connection refused")
        || has("connect")
        || has("dns")
        || has("resolve")
        || has("error sending request")
        || has("unavailable")
    {
        "not reachable from here: check host, port, DNS, firewall and proxy variables as the XMPP \
         server's account"
    } else if has("line ") {
        "fix or remove the lines named: the daemon ignores them, so those accounts cannot log in"
    } else {
        return None;
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn every_config_error_gets_a_specific_hint() {
        for (text, expect) in [
            ("timeout = \"4 parsecs\"", "durations"),
            ("colour = 1", "misspelt"),
            ("[[backend]]\nname='a'\ntype='file'\n", "required"),
            ("[[backend]]\nname='a'\ntype='ldap'\n", "values"),
            (
                "[[route]]\ndomains=['x']\nbackends=['nope']\n",
                "names of [[backend]]",
            ),
            ("timeout = 4", "wrong type"),
            ("[log\n", "syntax"),
        ] {
            let e = Config::parse(text, "c.toml").unwrap_err();
            assert!(hint(&e).contains(expect), "{text:?}: {e} -> {}", hint(&e));
        }
        // Tests run as root, where permissions cannot fail: the message is built here.
        let e = ConfigError::new(
            "/etc/x.toml",
            "(file)",
            "cannot read: Permission denied (os error 13)",
        );
        assert!(hint(&e).contains("readable by the XMPP server's account"));
        let e = ConfigError::new("/etc/x.toml", "(file)", "not found; use --config FILE");
        assert!(hint(&e).contains("Prosody passes no arguments"));
    }

    #[test]
    fn backend_failures_get_the_hint_of_their_cause() {
        for (detail, expect) in [
            (
                "users file /x: Permission denied (os error 13)",
                "owner, group and mode",
            ),
            (
                "users file /x: No such file or directory (os error 2)",
                "does not exist",
            ),
            ("no answer within the request timeout (4s)", "too slow"),
            (
                "backend unavailable: cannot connect: tcp connect error: Connection refused",
                "not reachable",
            ),
            (
                "backend unavailable: https://idp/.well-known/x: error sending request for url",
                "not reachable",
            ),
            (
                "backend unavailable: invalid peer certificate: UnknownIssuer",
                "TLS failed",
            ),
            (
                "users file /x line 4: expected user@domain:HASH",
                "fix or remove",
            ),
        ] {
            let hint = backend_hint(detail).unwrap_or_default();
            assert!(hint.contains(expect), "{detail:?} -> {hint:?}");
        }
        assert_eq!(backend_hint("something new"), None);
    }
}
