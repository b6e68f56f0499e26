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

fn code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// A config using `users` with `extra` keys at the top.
fn config(dir: &std::path::Path, users: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "{extra}\n[[backend]]\nname = \"local\"\ntype = \"file\"\npath = \"{}\"\n",
            users.display()
        ),
    )
    .unwrap();
    config
}

/// A Latin-1 comment (`# Grüße von Müller`), as an admin's editor may have saved it.
const LATIN1_COMMENT: &[u8] = b"# Gr\xfc\xdfe von M\xfcller";

#[test]
fn a_line_that_is_not_utf8_is_ignored_alone_and_kept_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    let mut text = LATIN1_COMMENT.to_vec();
    text.extend_from_slice(format!("\nromeo@example.net:{}\n", cheap_hash("pw")).as_bytes());
    // A Latin-1 account line too: unusable (the servers send UTF-8), but the rest works.
    text.extend_from_slice(b"m\xfcller@example.net:");
    text.extend_from_slice(format!("{}\n", cheap_hash("x")).as_bytes());
    text.extend_from_slice(format!("juliet@example.net:{}\n", cheap_hash("pw2")).as_bytes());
    std::fs::write(&users, &text).unwrap();
    let f = users.to_str().unwrap();

    // The daemon: every other line works; the two lines are logged by number.
    let out = daemon(
        &users,
        "auth:romeo:example.net:pw\nauth:juliet:example.net:pw2\nauth:romeo:example.net:no\n",
    );
    assert_eq!(stdout(&out), "1\n1\n0\n", "{}", stderr(&out));
    let log = stderr(&out);
    assert!(log.contains("line=1") && log.contains("line=3"), "{log}");
    assert!(!log.contains('$'), "{log}");

    // `users list`: the accounts, and the lines named on stderr.
    let out = run(&["users", "list", f], b"");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "romeo@example.net\njuliet@example.net\n");
    assert!(
        stderr(&out).contains("line 1") && stderr(&out).contains("line 3"),
        "{}",
        stderr(&out)
    );

    // `users passwd`: done, and the lines it cannot read are written back unchanged.
    let out = run(&["users", "passwd", f, "romeo@example.net"], b"new\n");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let after = std::fs::read(&users).unwrap();
    let lines: Vec<&[u8]> = after.split(|&b| b == b'\n').collect();
    let before: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    assert_eq!(lines.len(), before.len());
    assert_eq!(lines[0], LATIN1_COMMENT);
    assert_eq!(lines[2], before[2]);
    assert_eq!(lines[3], before[3]);
    assert_eq!(
        stdout(&daemon(
            &users,
            "auth:romeo:example.net:new\nauth:romeo:example.net:pw\n"
        )),
        "1\n0\n"
    );
}

#[test]
fn check_warns_about_a_comment_that_is_not_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    let mut text = format!("romeo@example.net:{}\n", cheap_hash("pw")).into_bytes();
    text.extend_from_slice(LATIN1_COMMENT);
    text.push(b'\n');
    std::fs::write(&users, &text).unwrap();
    let config = config(dir.path(), &users, "");
    let out = run(&["--config", config.to_str().unwrap(), "check"], b"");
    let report = stdout(&out);
    assert_eq!(code(&out), 0, "{report}{}", stderr(&out));
    assert!(report.contains("warn  local (file)"), "{report}");
    assert!(
        report.contains("line 2") && report.contains("UTF-8"),
        "{report}"
    );
}

/// A syntactically valid argon2id hash with the given parameters (its digest is junk: only
/// its cost matters here).
fn argon2_with(m: u32, t: u32, p: u32) -> String {
    format!("$argon2id$v=19$m={m},t={t},p={p}$c2FsdHNhbHRzYWx0$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
}

/// Hash parameters from the file are bounded: a line whose verification would outlast the
/// deadline (argon2 with 3 000 000 passes, bcrypt cost 31) is refused, and being the file's
/// most common cost, it does not become the decoy's cost either: every request is answered
/// at once, not at the deadline.
#[test]
fn hash_parameters_over_the_limits_are_refused_and_never_cost_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    let hostile = argon2_with(8, 3_000_000, 1);
    let bcrypt31 = "$2y$31$abcdefghijklmnopqrstuuVu4t4bIMnt8gyaUFhJ2Flkrf0gkO9Dq";
    let text = format!(
        "romeo@example.net:{}\na@example.net:{hostile}\nb@example.net:{hostile}\n\
         c@example.net:{hostile}\nd@example.net:{bcrypt31}\ne@example.net:{}\n",
        cheap_hash("pw"),
        argon2_with(262_144, 16, 1),
    );
    std::fs::write(&users, &text).unwrap();
    let config = config(dir.path(), &users, "timeout = \"3s\"\n");
    let cfg = config.to_str().unwrap();

    let started = std::time::Instant::now();
    let out = run(
        &["--config", cfg],
        b"auth:romeo:example.net:pw\nauth:a:example.net:x\nauth:nobody:example.net:x\n\
          auth:d:example.net:x\nauth:e:example.net:x\nisuser:a:example.net\n\
          tryregister:a:example.net:mine\nauth:romeo:example.net:pw\n",
    );
    let took = started.elapsed();
    // Refused lines are still the accounts of the file: `isuser` 1, no re-registration.
    assert_eq!(stdout(&out), "1\n0\n0\n0\n0\n1\n0\n1\n", "{}", stderr(&out));
    assert!(took < std::time::Duration::from_secs(3), "took {took:?}");
    let log = stderr(&out);
    for line in ["line=2", "line=3", "line=4", "line=5", "line=6"] {
        assert!(log.contains(line), "{line} not in {log}");
    }
    assert!(!log.contains("timeout"), "{log}");
    assert!(!log.contains(&hostile) && !log.contains(bcrypt31), "{log}");

    let out = run(&["--config", cfg, "check"], b"");
    let report = stdout(&out);
    assert_eq!(code(&out), 0, "{report}{}", stderr(&out));
    assert!(report.contains("warn  local (file)"), "{report}");
    assert!(
        report.contains("line 2") && report.contains("line 5") && report.contains("line 6"),
        "{report}"
    );
    assert!(
        !report.contains(&hostile) && !report.contains("$2y$31$"),
        "{report}"
    );
}
