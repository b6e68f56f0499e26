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

/// `ǅ` (U+01C5) is a titlecase letter: neither upper nor lower case, lower-cased to `ǆ`. The
/// users file folds it, so `ǅemo` and `ǆemo` are one account; the cache must fold it the same
/// way, or removing `ǆemo` leaves `ǅemo`'s cached yes behind and the deleted account logs in.
#[test]
fn removing_an_account_evicts_it_from_the_cache_under_every_spelling_the_file_folds() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(&users, "# accounts\n").unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[cache]\nenabled = true\nttl = \"5m\"\n\n[[backend]]\nname = \"local\"\n\
             type = \"file\"\npath = \"{}\"\n",
            users.display()
        ),
    )
    .unwrap();
    let mut bridge = Live::spawn(&["--config", config.to_str().unwrap()]);
    assert_eq!(bridge.ask("tryregister:ǆemo:example.net:pw"), "1\n");
    assert_eq!(bridge.ask("auth:ǅemo:example.net:pw"), "1\n");
    assert_eq!(bridge.ask("auth:ǅemo:example.net:pw"), "1\n");
    assert_eq!(bridge.ask("removeuser:ǆemo:example.net"), "1\n");
    assert_eq!(bridge.ask("isuser:ǅemo:example.net"), "0\n");
    assert_eq!(bridge.ask("auth:ǅemo:example.net:pw"), "0\n");
    assert_eq!(bridge.ask("auth:Ǆemo:example.net:pw"), "0\n");
}
