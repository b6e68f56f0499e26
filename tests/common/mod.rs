//! Helpers shared by the integration tests: spawn the real binary with pipes, as the XMPP
//! servers do, and build users files with cheap hashes.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

pub const BIN: &str = env!("CARGO_BIN_EXE_extauth-bridge");

/// An argon2id hash with tiny parameters: same verification code path, fast tests.
pub fn cheap_hash(password: &str) -> String {
    let params = Params::new(64, 1, 1, None).unwrap();
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
    argon
        .hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

/// Writes a users file with the given `(jid, password)` pairs into `dir`.
pub fn users_file(dir: &Path, accounts: &[(&str, &str)]) -> PathBuf {
    let path = dir.join("users.txt");
    let mut text = String::from("# test accounts\n");
    for (jid, pw) in accounts {
        text.push_str(&format!("{jid}:{}\n", cheap_hash(pw)));
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the bridge with `args`, feeds it `input`, closes stdin and waits.
pub fn run(args: &[&str], input: &[u8]) -> Output {
    run_env(args, input, &[])
}

pub fn run_env(args: &[&str], input: &[u8], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("EXTAUTH_BRIDGE_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn bridge");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait bridge");
    writer.join().unwrap();
    out
}

/// One ejabberd frame.
pub fn frame(payload: &str) -> Vec<u8> {
    let mut v = (payload.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(payload.as_bytes());
    v
}

pub const YES: [u8; 4] = [0, 2, 0, 1];
pub const NO: [u8; 4] = [0, 2, 0, 0];
