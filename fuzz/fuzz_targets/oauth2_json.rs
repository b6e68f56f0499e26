//! The OAuth2 backend's JSON handling (token, introspection, userinfo, JWKS and discovery responses, then the identity check) on arbitrary bytes. The property itself is `common::oauth2_json`, shared with
//! tests/fuzz_corpus.rs, which replays the committed corpus on stable.
#![no_main]

// Each target uses one of the shared properties; the others are dead code here.
#[allow(dead_code)]
#[path = "common.rs"]
mod common;
#[allow(dead_code)]
#[path = "../../tests/common/oracle.rs"]
mod oracle;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| common::oauth2_json(data));
