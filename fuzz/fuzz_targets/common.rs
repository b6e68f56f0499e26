//! The properties the fuzz targets check, one function per target, each taking the raw fuzz
//! input. They live here rather than in the targets so that `tests/fuzz_corpus.rs` can replay
//! the committed corpora through exactly the same checks with plain `cargo test` on stable,
//! where libFuzzer is not available. Whoever includes this file must also declare
//! `mod oracle` (tests/common/oracle.rs) at its crate root: the counts come from there.

use bytes::BytesMut;
use extauth_bridge::backend::file::format::{BadKind, UsersFile};
use extauth_bridge::backend::oauth2::identity::{IdentityRule, UsernameCase, UsernameMapping};
use extauth_bridge::backend::oauth2::settings::Settings;
use extauth_bridge::backend::oauth2::{discovery, grant, introspect, jwt, userinfo};
use extauth_bridge::protocol::{EjabberdCodec, LineCodec, Protocol, WireCodec, DETECT_BYTES};
use extauth_bridge::request::{Account, Incoming, Request};
use serde_json::Value;
use tokio_util::codec::{Decoder, Encoder};

use crate::oracle;

/// The line limit the line codec is fuzzed with: small, so that over-long lines (and the
/// codec's discard-until-newline path) are cheap for the fuzzer to reach.
const MAX_LINE: usize = 64;

/// The line codec on arbitrary bytes, fed in arbitrary pieces (the first byte picks the
/// piece size). Checks what the request loop relies on: exactly one item per `\n`-terminated
/// line plus one for a non-empty unterminated tail at EOF, the same items however the input
/// is split, and a bounded buffer.
pub fn line_codec(data: &[u8]) {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let decode =
        |piece| decode_in_pieces(&mut LineCodec::new(MAX_LINE), input, piece, MAX_LINE + 1);
    let whole = decode(input.len().max(1));
    let pieces = decode(usize::from(split % 17) + 1);
    assert_eq!(whole.len(), oracle::line_requests(input));
    assert_eq!(whole, pieces);
}

/// The ejabberd codec on arbitrary bytes, fed in arbitrary pieces (the first byte picks the
/// piece size): one item per complete frame, the same items however the input is split, a
/// truncated last frame dropped at EOF.
pub fn ejabberd_codec(data: &[u8]) {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let decode = |piece| decode_in_pieces(&mut EjabberdCodec, input, piece, 2 + 65_535);
    let whole = decode(input.len().max(1));
    let pieces = decode(usize::from(split % 17) + 1);
    assert_eq!(whole.len(), oracle::complete_frames(input));
    assert_eq!(whole, pieces);
}

/// Auto-detection (`protocol = "auto"`) and decoding, fed in arbitrary pieces. The first
/// byte picks the piece size, the second what the rest is:
/// - `0 mod 3`: arbitrary bytes. The framing is decided within [`DETECT_BYTES`] and is the
///   same however the input is split; the items are exactly what that framing's codec makes
///   of the whole input; the buffer stays bounded; every reply is well-formed in that framing.
/// - `1 mod 3`: valid ejabberd frames built from the input (split at `0xff`, each chunk an
///   `auth` payload, padded by `chunk[0] * 257` bytes so that long frames, whose length
///   starts with a printable byte, are cheap to reach): always detected as ejabberd and
///   decoded as the ejabberd codec decodes them.
/// - `2 mod 3`: valid lines built the same way: always detected as lines.
pub fn protocol_detect(data: &[u8]) {
    let [split, mode, rest @ ..] = data else {
        return;
    };
    let piece = usize::from(split % 17) + 1;
    let (input, must_be) = match mode % 3 {
        0 => (rest.to_vec(), None),
        1 => (valid_stream(rest, true), Some(Protocol::Ejabberd)),
        _ => (valid_stream(rest, false), Some(Protocol::Line)),
    };
    let whole_start = &input[..input.len().min(DETECT_BYTES)];
    let Some(decided) = Protocol::detect(whole_start, true) else {
        assert!(input.is_empty(), "undecided on a non-empty stream at EOF");
        return;
    };
    if let Some(protocol) = must_be {
        assert_eq!(
            decided, protocol,
            "a valid stream detected as the other framing"
        );
    }
    let bound = (2 + 65_535).max(MAX_LINE + 1);
    let mut auto = WireCodec::new(Protocol::Auto, MAX_LINE);
    let items = decode_in_pieces(&mut auto, &input, piece, bound);
    assert_eq!(auto.protocol(), decided, "split input decided otherwise");
    let expected = match decided {
        Protocol::Ejabberd => {
            decode_in_pieces(&mut EjabberdCodec, &input, input.len().max(1), bound)
        }
        _ => decode_in_pieces(
            &mut LineCodec::new(MAX_LINE),
            &input,
            input.len().max(1),
            bound,
        ),
    };
    assert_eq!(items, expected);
    // Replies: one per item, each complete and in the decided framing.
    for answer in [false, true] {
        let mut out = BytesMut::new();
        auto.encode(answer, &mut out).expect("encoding never fails");
        let wanted: &[u8] = match (decided, answer) {
            (Protocol::Ejabberd, false) => &[0, 2, 0, 0],
            (Protocol::Ejabberd, true) => &[0, 2, 0, 1],
            (_, false) => b"0\n",
            (_, true) => b"1\n",
        };
        assert_eq!(&out[..], wanted);
    }
}

/// A stream of valid requests made from `data`: ejabberd frames (`frames`) or lines.
fn valid_stream(data: &[u8], frames: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in data.split(|&b| b == 0xff) {
        let mut payload = b"auth:romeo:example.net:".to_vec();
        // Lines end at `\n`, and a `\r` before it is stripped: keep both out of a line's
        // password, so each chunk stays one request.
        payload.extend(
            chunk
                .iter()
                .filter(|&&b| frames || (b != b'\n' && b != b'\r')),
        );
        let pad = usize::from(chunk.first().copied().unwrap_or(0)) * 257;
        let limit = if frames { 65_535 } else { MAX_LINE };
        payload.resize((payload.len() + pad).min(limit), b'p');
        payload.truncate(limit);
        if frames {
            out.extend_from_slice(
                &u16::try_from(payload.len())
                    .unwrap_or(u16::MAX)
                    .to_be_bytes(),
            );
            out.extend_from_slice(&payload);
        } else {
            out.extend_from_slice(&payload);
            out.push(b'\n');
        }
    }
    out
}

/// `Request::parse` on arbitrary bytes: never panics, and what it accepts is what the SPEC
/// says: a known command, non-empty user and server without control characters or `:`, the
/// password (when there is one) being everything after the third `:`.
pub fn request_parse(data: &[u8]) {
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
}

/// The users-file parser on arbitrary bytes: never panics; keeps every line (a rewrite
/// writes one line per line read); names its bad lines in order, within the file; and a
/// rewrite is a fixed point: what it writes reads back as the same accounts, hashes and bad
/// lines, and is written again unchanged. So no rewrite can lose, merge or revive an account,
/// and every account it lists is found under its own name (the folding is idempotent).
pub fn users_file(data: &[u8]) {
    let (users, bad) = UsersFile::parse(data);
    let rendered = users.render();
    let lines = data.iter().filter(|&&b| b == b'\n').count()
        + usize::from(!data.is_empty() && !data.ends_with(b"\n"));
    assert_eq!(rendered.iter().filter(|&&b| b == b'\n').count(), lines);
    assert!(bad.windows(2).all(|w| w[0].number < w[1].number));
    assert!(bad.iter().all(|b| (1..=lines).contains(&b.number)));
    for b in &bad {
        if let BadKind::Duplicate(first) = b.kind {
            assert!(first < b.number);
        }
    }

    let (again, bad_again) = UsersFile::parse(&rendered);
    assert_eq!(again.render(), rendered, "a rewrite changes what it wrote");
    assert_eq!(bad_again, bad);
    let accounts: Vec<&str> = users.accounts().collect();
    assert_eq!(again.accounts().collect::<Vec<_>>(), accounts);
    for key in &accounts {
        let (user, server) = key.rsplit_once('@').expect("an account has a domain");
        assert!(
            users.contains(user, server),
            "{key:?} not found under its own name"
        );
        assert_eq!(users.hash_of(user, server), again.hash_of(user, server));
    }

    // A password change reads back, and drops no other account.
    let Some((user, server)) = accounts.first().and_then(|k| k.rsplit_once('@')) else {
        return;
    };
    let mut changed = users.clone();
    let hash =
        "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    assert!(changed.set_hash(user, server, hash.to_owned()));
    let (reread, _) = UsersFile::parse(changed.render());
    assert_eq!(reread.hash_of(user, server), Some(hash));
    assert_eq!(reread.accounts().collect::<Vec<_>>(), accounts);
}

/// Every item decoded from `input` fed `piece` bytes at a time, then EOF, as `Debug` text
/// (comparable; secrets print redacted). Checks the buffer never holds more than `bound`
/// plus one piece, and that EOF leaves nothing behind.
fn decode_in_pieces<D>(codec: &mut D, input: &[u8], piece: usize, bound: usize) -> Vec<String>
where
    D: Decoder<Item = Incoming, Error = std::io::Error>,
{
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    for chunk in input.chunks(piece) {
        buf.extend_from_slice(chunk);
        while let Some(item) = codec.decode(&mut buf).expect("decode never fails") {
            items.push(format!("{item:?}"));
        }
        assert!(buf.len() <= bound + piece, "buffer grew to {}", buf.len());
    }
    while let Some(item) = codec.decode_eof(&mut buf).expect("decode_eof never fails") {
        items.push(format!("{item:?}"));
    }
    assert!(buf.is_empty(), "EOF leaves nothing behind");
    items
}

/// The issuer, audience, domain and clock the OAuth2 JSON is judged against.
const ISSUER: &str = "https://idp.example";
const AUDIENCE: &str = "bridge";
const SERVER: &str = "example.net";
const NOW: u64 = 1_700_000_000;

/// The OAuth2 backend's JSON handling on arbitrary bytes, the same bytes read as each kind
/// of IdP response: nothing panics, and what is accepted obeys SPEC §10.
/// - token response: the access token is visible ASCII;
/// - JWKS: no more usable keys than entries;
/// - discovery: the document names exactly our issuer, every endpoint is http(s) without
///   credentials;
/// - introspection: an accepted token is active, not a refresh token, meant for us (in
///   `aud` or our `client_id`), from our issuer when it says;
/// - identity (userinfo claims, under every rule): one set of claims names one user (ASCII
///   case aside under `ascii`), taken from the claims themselves; `exact` accepts nothing
///   `ascii` refuses; a name from `email` needs `email_verified: true`.
pub fn oauth2_json(data: &[u8]) {
    // serde also reads a struct from an array of its fields in order (`[[]]` is a JWKS with
    // no keys, found by this target): the comparisons with the `Value` below are made only
    // for an object.
    let parsed: Option<Value> = serde_json::from_slice(data).ok().filter(Value::is_object);
    if let Ok(token) = grant::parse_token_response(data) {
        let token = token.expose();
        assert!(!token.is_empty() && token.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    }
    // serde skips an unknown field without checking its string's UTF-8, so a document can
    // parse into our types and still not be a `Value` (found by this target): the
    // comparisons with the `Value` are made only when it is one.
    if let Ok(n) = jwt::usable_keys_in(data) {
        if let Some(v) = parsed.as_ref() {
            let entries = v["keys"].as_array().map(Vec::len);
            assert!(n <= entries.expect("a JWKS that parsed has a keys array"));
        }
    }
    if let Ok(endpoints) = discovery::parse_document(data, "https://idp.example/.wk", ISSUER) {
        if let Some(doc) = parsed.as_ref() {
            assert_eq!(doc["issuer"].as_str(), Some(ISSUER));
        }
        for url in [
            &endpoints.token,
            &endpoints.introspection,
            &endpoints.userinfo,
            &endpoints.jwks_uri,
        ]
        .into_iter()
        .flatten()
        {
            let url = reqwest::Url::parse(url).expect("an accepted endpoint is a URL");
            assert!(url.scheme() == "http" || url.scheme() == "https");
            assert!(url.username().is_empty() && url.password().is_none());
        }
    }
    if let Ok(Ok(claims)) = introspect::judge_body(data, &settings(), NOW) {
        assert_eq!(claims.get("active"), Some(&Value::Bool(true)));
        assert_ne!(
            claims.get("token_type").and_then(Value::as_str),
            Some("refresh_token")
        );
        let in_aud = match claims.get("aud") {
            Some(Value::String(a)) => a == AUDIENCE,
            Some(Value::Array(all)) => all.contains(&Value::from(AUDIENCE)),
            _ => false,
        };
        assert!(in_aud || claims.get("client_id") == Some(&Value::from(AUDIENCE)));
        assert!(claims.get("iss").map_or(true, |i| i == ISSUER));
    }
    if let Ok(claims) = userinfo::parse_claims(data) {
        identity_property(&claims);
    }
}

fn settings() -> Settings {
    Settings::introspected_tokens(Some(AUDIENCE.into()), Some(ISSUER.into()), Vec::new())
}

fn rule(field: &str, mapping: UsernameMapping, case: UsernameCase) -> IdentityRule {
    IdentityRule {
        field: field.into(),
        mapping,
        case,
    }
}

/// Users the claims might name: a few fixed ones, and every top-level string value whole,
/// before its last `@` and without an `xmpp:` prefix (so the fuzzer reaches acceptance).
fn candidates(claims: &extauth_bridge::backend::oauth2::identity::Claims) -> Vec<String> {
    let mut users: Vec<String> = ["romeo", "Romeo", "ROMEO", "juliet", "kate"]
        .map(str::to_owned)
        .to_vec();
    for value in claims.values().filter_map(Value::as_str).take(16) {
        let bare = value.strip_prefix("xmpp:").unwrap_or(value);
        users.push(value.to_owned());
        users.push(bare.rsplit_once('@').map_or(bare, |(u, _)| u).to_owned());
    }
    users.sort();
    users.dedup();
    users
}

fn identity_property(claims: &extauth_bridge::backend::oauth2::identity::Claims) {
    let users = candidates(claims);
    let texts: Vec<&str> = claims.values().filter_map(Value::as_str).collect();
    for field in ["preferred_username", "email"] {
        for mapping in [UsernameMapping::Localpart, UsernameMapping::AsIs] {
            let accepted = |case| -> Vec<&String> {
                let r = rule(field, mapping, case);
                users
                    .iter()
                    .filter(|u| {
                        let account = Account {
                            user: (*u).clone(),
                            server: SERVER.into(),
                        };
                        r.check(claims, &account).is_ok()
                    })
                    .collect()
            };
            let exact = accepted(UsernameCase::Exact);
            let ascii = accepted(UsernameCase::Ascii);
            assert!(exact.len() <= 1, "{field}: one claim set names {exact:?}");
            assert!(exact.iter().all(|u| ascii.contains(u)));
            assert!(
                ascii.windows(2).all(|w| w[0].eq_ignore_ascii_case(w[1])),
                "{ascii:?}"
            );
            for user in &ascii {
                // The name came from the claims, not from folding beyond ASCII.
                let lower = user.to_ascii_lowercase();
                assert!(texts
                    .iter()
                    .any(|t| t.to_ascii_lowercase().contains(&lower)));
            }
            let from_email = field == "email"
                && claims.contains_key("email")
                && !claims
                    .get("sub")
                    .and_then(Value::as_str)
                    .is_some_and(|s| s.starts_with("xmpp:"));
            if from_email && !ascii.is_empty() {
                assert_eq!(claims.get("email_verified"), Some(&Value::Bool(true)));
            }
        }
    }
}
