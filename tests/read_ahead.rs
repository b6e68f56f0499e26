//! Read-ahead through the real binary: a piped batch runs concurrently, and the replies come
//! back in request order even when later requests finish first. The delays are real: users
//! whose hashes cost very different amounts of work (argon2id at 8 MiB vs 64 KiB).

mod common;

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use common::*;

fn hash(password: &str, memory_kib: u32, passes: u32) -> String {
    let params = Params::new(memory_kib, passes, 1, None).unwrap();
    let salt = SaltString::encode_b64(b"read-ahead-salt!").unwrap();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

#[test]
fn replies_stay_in_order_when_later_requests_finish_first() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.txt");
    std::fs::write(
        &users,
        format!(
            "slow@example.net:{}\nfast@example.net:{}\n",
            hash("slow-pw", 8 * 1024, 2),
            hash("fast-pw", 64, 1)
        ),
    )
    .unwrap();
    // Slow ones first, each followed by cheap ones whose answers differ from it.
    let mut input = Vec::new();
    let mut expected = Vec::new();
    for round in 0..4 {
        let slow_right = round % 2 == 0;
        let requests: [(String, bool); 5] = [
            (
                format!(
                    "auth:slow:example.net:{}",
                    if slow_right { "slow-pw" } else { "nope" }
                ),
                slow_right,
            ),
            ("isuser:nobody:example.net".into(), false),
            ("auth:fast:example.net:fast-pw".into(), true),
            ("isuser:slow:example.net".into(), true),
            ("auth:fast:example.net:wrong".into(), false),
        ];
        for (payload, answer) in requests {
            input.extend(frame(&payload));
            expected.extend(if answer { YES } else { NO });
        }
    }
    let out = run(
        &["--users", users.to_str().unwrap(), "--protocol", "ejabberd"],
        &input,
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, expected);
    // They did run out of order: an `isuser` (no hashing) is logged before the slow `auth`.
    let log = String::from_utf8_lossy(&out.stderr);
    let position = |id: u32| {
        log.find(&format!("request id={id} "))
            .unwrap_or_else(|| panic!("no log line for request {id}: {log}"))
    };
    assert!(position(1) < position(0), "{log}");
}
