//! The users file as the daemon and the `users` command read it: what a line may hold, what
//! it may cost, and what a line the bridge cannot use does to the rest of the file.

mod common;

use common::*;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The daemon on `users`, fed `input` (line protocol) until EOF.
fn daemon(users: &std::path::Path, input: &str) -> std::process::Output {
    run(&["--users", users.to_str().unwrap()], input.as_bytes())
}

#[test]
fn bcrypt_refuses_a_password_that_only_shares_the_first_72_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    let password = "p".repeat(72);
    let hash = bcrypt::hash(&password, 4)
        .unwrap()
        .replacen("$2b$", "$2y$", 1);
    std::fs::write(&users, format!("romeo@example.net:{hash}\n")).unwrap();
    let out = daemon(
        &users,
        &format!(
            "auth:romeo:example.net:{password}\nauth:romeo:example.net:{password}x\n\
             auth:romeo:example.net:{password}{password}\n"
        ),
    );
    assert_eq!(stdout(&out), "1\n0\n0\n", "{}", stderr(&out));
}
