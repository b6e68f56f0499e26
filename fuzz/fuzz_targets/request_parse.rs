//! `Request::parse` on arbitrary bytes: never panics, and what it accepts is what the SPEC
//! says: a known command, non-empty user and server without control characters or `:`, the
//! password (when there is one) being everything after the third `:`.
#![no_main]

use extauth_bridge::request::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = Request::parse(data) else {
        return;
    };
    let text = std::str::from_utf8(data).expect("accepted input is UTF-8");
    assert!(!text.contains('\0'));
    let mut fields = text.splitn(4, ':');
    assert_eq!(fields.next(), Some(request.command().as_str()));
    let account = request.account();
    assert_eq!(fields.next(), Some(account.user.as_str()));
    assert_eq!(fields.next(), Some(account.server.as_str()));
    assert!(!account.user.is_empty() && !account.server.is_empty());
    assert!(!account
        .user
        .chars()
        .chain(account.server.chars())
        .any(char::is_control));
    let password = match &request {
        Request::Auth(_, p)
        | Request::SetPass(_, p)
        | Request::TryRegister(_, p)
        | Request::RemoveUser3(_, p) => Some(p.expose()),
        Request::IsUser(_) | Request::RemoveUser(_) => None,
        Request::CertAuth(_) => return,
    };
    assert_eq!(fields.next(), password);
});
