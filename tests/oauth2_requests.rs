//! What the OAuth2 backend sends, and where: checked on the requests a loopback IdP
//! (tests/oauth2_common/fake.rs) received.

mod oauth2_common;

use oauth2_common::fake::{FakeIdp, DISCOVERY};
use oauth2_common::*;

fn backend(settings: &str) -> String {
    format!("[[backend]]\nname = \"idp\"\ntype = \"oauth2\"\n{settings}")
}

/// The password grant with userinfo needs two endpoints: configured, they switch
/// discovery off, even with an `issuer` set whose well-known URLs answer 404 (or where
/// nothing listens), and the metadata is never asked for.
#[test]
fn explicit_endpoints_for_what_the_mode_needs_switch_discovery_off() {
    let idp = FakeIdp::start();
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let base = &idp.base;
    for issuer in [format!("{base}/no-metadata"), dead] {
        let config = write_config(
            dir.path(),
            &backend(&format!(
                "issuer = \"{issuer}\"\ntoken_endpoint = \"{base}/token\"\n\
                 userinfo_endpoint = \"{base}/userinfo\"\nclient_id = \"bridge\"\n\
                 client_auth = \"none\"\nverify = \"userinfo\"\n"
            )),
        );
        for wire in BOTH {
            let mut bridge = Bridge::start(&config, wire);
            assert!(bridge.auth("romeo", "example.net", "right"), "{issuer}");
            assert!(!bridge.auth("romeo", "example.net", "wrong"), "{issuer}");
            bridge.finish();
        }
    }
    let seen = idp.seen();
    assert!(seen.iter().any(|r| r == "GET /userinfo"), "{seen:?}");
    assert!(
        !seen.iter().any(|r| r.contains("/.well-known/")),
        "{seen:?}"
    );

    // For contrast: without userinfo_endpoint, discovery is needed and asked.
    let config = write_config(
        dir.path(),
        &backend(&format!(
            "issuer = \"{base}\"\ntoken_endpoint = \"{base}/token\"\nclient_id = \"bridge\"\n\
             client_auth = \"none\"\nverify = \"userinfo\"\n"
        )),
    );
    let mut bridge = Bridge::start(&config, Wire::Line);
    assert!(bridge.auth("romeo", "example.net", "right"));
    bridge.finish();
    assert!(idp.seen().contains(&format!("GET {DISCOVERY}")));
}

/// `username_format`: the password grant sends `user@server` with `jid`, `user` by
/// default, as the token endpoint received it.
#[test]
fn username_format_decides_the_username_of_the_password_grant() {
    let idp = FakeIdp::start();
    let dir = tempfile::tempdir().unwrap();
    let base = &idp.base;
    for (format, sent) in [
        ("username_format = \"jid\"\n", "romeo@example.net"),
        ("username_format = \"localpart\"\n", "romeo"),
        ("", "romeo"),
    ] {
        let config = write_config(
            dir.path(),
            &backend(&format!(
                "{format}token_endpoint = \"{base}/token\"\nuserinfo_endpoint = \"{base}/userinfo\"\n\
                 client_id = \"bridge\"\nclient_auth = \"none\"\n"
            )),
        );
        let mut bridge = Bridge::start(&config, Wire::Line);
        assert!(bridge.auth("romeo", "example.net", "right"), "{format}");
        bridge.finish();
        assert_eq!(
            idp.usernames().last().map(String::as_str),
            Some(sent),
            "{format}"
        );
    }
}
