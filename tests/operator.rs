//! The operator's commands (`check`, `query`, `users`) run as the real binary, against
//! configurations and users files in a temp dir.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A users file with romeo and juliet, and a config using it; returns (config, users).
fn setup(dir: &Path) -> (PathBuf, PathBuf) {
    let users = users_file(
        dir,
        &[
            ("romeo@example.net", "iheartjuliet"),
            ("juliet@example.net", "wherefore:art thou"),
        ],
    );
    let config = write_config(
        dir,
        &format!(
            "timeout = \"2s\"\n[[backend]]\nname = \"local\"\ntype = \"file\"\npath = \"{}\"\n",
            users.display()
        ),
    );
    (config, users)
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    path
}

fn code(out: &std::process::Output) -> i32 {
    out.status.code().expect("exited, not killed")
}

// ---------------------------------------------------------------- check

#[test]
fn check_good_config_exits_0_with_one_line_per_backend() {
    let dir = tempfile::tempdir().unwrap();
    let (config, users) = setup(dir.path());
    let out = run(&["--config", config.to_str().unwrap(), "check"], b"");
    let text = stdout(&out);
    assert_eq!(code(&out), 0, "{text}\n{}", stderr(&out));
    let backend_lines: Vec<&str> = text.lines().filter(|l| l.starts_with("backend")).collect();
    assert_eq!(backend_lines.len(), 1, "{text}");
    let line = backend_lines[0];
    assert!(
        line.contains(" ok ") && line.contains("local (file)"),
        "{line}"
    );
    assert!(
        line.contains("2 account(s)") && line.contains(" ms"),
        "{line}"
    );
    assert!(line.contains(users.to_str().unwrap()), "{line}");
    assert!(text.contains("timeout 2s"), "{text}");
    assert!(
        text.contains("routes    ok    no [[route]]: every domain asks local in order"),
        "{text}"
    );
    assert!(text.contains("logs      ok    stderr"), "{text}");
    // Run as root, `check` warns that root hides permission problems.
    let verdict = if is_root() {
        "result    ok    usable, with 1 warning(s) above"
    } else {
        "result    ok    all is well"
    };
    assert_eq!(text.lines().last().unwrap(), verdict, "{text}");
}

#[test]
fn check_json_is_one_object_with_the_same_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = setup(dir.path());
    let out = run(
        &["--config", config.to_str().unwrap(), "check", "--json"],
        b"",
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["exit"], 0);
    assert_eq!(v["backends"][0]["name"], "local");
    assert_eq!(v["backends"][0]["kind"], "file");
    assert_eq!(v["backends"][0]["ok"], true);
    assert!(v["backends"][0]["millis"].as_f64().unwrap() >= 0.0);
    assert!(v["config_error"].is_null());
    assert_eq!(v["effective"]["timeout_ms"], 2000);
    assert_eq!(v["effective"]["protocol"], "auto");
    assert_eq!(v["effective"]["log"], "stderr");
    assert_eq!(v["effective"]["log_under_pty"], "nowhere");
    assert_eq!(v["effective"]["stdout_is_terminal"], false);

    std::fs::write(&config, "timeout = 3\n").unwrap();
    let out = run(
        &["--config", config.to_str().unwrap(), "check", "--json"],
        b"",
    );
    assert_eq!(code(&out), 2);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["config_error"]["key"], "timeout");
    assert_eq!(v["config_error"]["line"], 1);
    assert!(v["config_error"]["hint"].as_str().unwrap().contains("type"));
}

#[test]
fn check_broken_configs_exit_2_naming_file_key_and_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path(), &[("romeo@example.net", "x")]);
    let backend = format!(
        "[[backend]]\nname = \"local\"\ntype = \"file\"\npath = \"{}\"\n",
        users.display()
    );
    let cases: Vec<(String, &str, &str)> = vec![
        ("timout = \"4s\"\n".into(), "key `timout`", "misspelt"),
        (
            "timeout = \"4 parsecs\"\n".into(),
            "key `timeout`",
            "durations",
        ),
        ("protocol = \"xml\"\n".into(), "key `protocol`", "values"),
        (
            "[[backend]]\nname = \"local\"\ntype = \"file\"\n".into(),
            "key `backend[0].path`",
            "required",
        ),
        (
            "[[backend]]\nname = \"x\"\ntype = \"ldap\"\n".into(),
            "key `backend[0]`",
            "values",
        ),
        (
            format!("{backend}[[route]]\ndomains = [\"example.net\"]\nbackends = [\"locl\"]\n"),
            "key `route[0].backends`",
            "names of [[backend]]",
        ),
        (
            format!("{backend}[[route]]\ndomains = [\"exa mple.net\"]\nbackends = [\"local\"]\n"),
            "key `route[0].domains`",
            "*.example.org",
        ),
        (
            format!("{backend}{backend}"),
            "key `backend[1].name`",
            "its own name",
        ),
        (
            "timeout = \"4s\"\n".into(),
            "key `backend`",
            "add a [[backend]]",
        ),
        ("[log\nlevel = 1\n".into(), "line 1", "syntax"),
    ];
    for (text, key, hint) in cases {
        let config = write_config(dir.path(), &text);
        let out = run(&["--config", config.to_str().unwrap(), "check"], b"");
        let report = stdout(&out);
        assert_eq!(code(&out), 2, "{text}\n{report}");
        let first = report.lines().next().unwrap();
        assert!(
            first.starts_with("config    FAIL") && first.contains(config.to_str().unwrap()),
            "{text}\n{report}"
        );
        assert!(first.contains(key), "{text}: want {key}\n{report}");
        let hint_line = report.lines().nth(1).unwrap();
        assert!(
            hint_line.trim_start().starts_with("hint") && hint_line.contains(hint),
            "{text}: want hint {hint:?}\n{report}"
        );
        assert!(report.contains("result    FAIL  configuration error"));
    }

    let out = run(&["--config", "/nonexistent/extauth.toml", "check"], b"");
    assert_eq!(code(&out), 2);
    let report = stdout(&out);
    assert!(report.contains("/nonexistent/extauth.toml"), "{report}");
    assert!(report.contains("EXTAUTH_BRIDGE_CONFIG"), "{report}");
}

#[test]
fn check_broken_backends_and_environment_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let (config, users) = setup(dir.path());
    let cfg = config.to_str().unwrap();

    // Users file with a line the daemon would ignore.
    let mut text = std::fs::read_to_string(&users).unwrap();
    text.push_str("mercutio@example.net:plaintext\n");
    std::fs::write(&users, &text).unwrap();
    let out = run(&["--config", cfg, "check"], b"");
    let report = stdout(&out);
    assert_eq!(code(&out), 1, "{report}");
    assert!(
        report.contains("FAIL  local (file)") && report.contains("line 4"),
        "{report}"
    );
    assert!(report.contains("1 of 1 backend(s) failed"), "{report}");
    assert!(
        report.contains("hint  fix or remove the lines named"),
        "{report}"
    );

    // Users file gone: the backend cannot be read.
    std::fs::remove_file(&users).unwrap();
    let out = run(&["--config", cfg, "check"], b"");
    let report = stdout(&out);
    assert_eq!(code(&out), 1, "{report}");
    assert!(report.contains("No such file"), "{report}");
    assert!(
        report.contains("hint  the path does not exist here"),
        "{report}"
    );

    // A good backend, but a world-writable config.
    users_file(dir.path(), &[("romeo@example.net", "x")]);
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = run(&["--config", cfg, "check"], b"");
    let report = stdout(&out);
    assert_eq!(code(&out), 1, "{report}");
    assert!(report.contains("perms     FAIL  mode 0666"), "{report}");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o640)).unwrap();

    // A log file the daemon could not open.
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = text.replace(
        "timeout = \"2s\"\n",
        "timeout = \"2s\"\n[log]\ntarget = \"file\"\nfile = \"/nonexistent/dir/bridge.log\"\n",
    );
    std::fs::write(&config, text).unwrap();
    let out = run(&["--config", cfg, "check"], b"");
    let report = stdout(&out);
    assert_eq!(code(&out), 1, "{report}");
    assert!(
        report.contains("logs      FAIL") && report.contains("cannot write /nonexistent/dir"),
        "{report}"
    );

    // A metrics file nobody could write, shared by all processes.
    let (config, _) = setup(dir.path());
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.insert_str(0, "metrics_file = \"/nonexistent/bridge.prom\"\n");
    std::fs::write(&config, text).unwrap();
    let out = run(&["--config", cfg, "check"], b"");
    let report = stdout(&out);
    assert_eq!(code(&out), 1, "{report}");
    assert!(
        report.contains("metrics   FAIL") && report.contains("overwrite each other"),
        "{report}"
    );
}

#[test]
fn check_reports_a_backend_that_does_not_answer_in_time() {
    let dir = tempfile::tempdir().unwrap();
    // A FIFO nobody writes to: reading it blocks, like a users file on a hung NFS mount.
    let fifo = dir.path().join("users.fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let config = write_config(
        dir.path(),
        &format!(
            "timeout = \"300ms\"\n[[backend]]\nname = \"slow\"\ntype = \"file\"\npath = \"{}\"\n",
            fifo.display()
        ),
    );
    let started = std::time::Instant::now();
    let out = run(&["--config", config.to_str().unwrap(), "check"], b"");
    let report = stdout(&out);
    assert_eq!(code(&out), 1, "{report}");
    assert!(
        report.contains("FAIL  slow (file)")
            && report.contains("no answer within the request timeout (300ms)"),
        "{report}"
    );
    // Generous: the point is that it returns at all.
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn check_warns_about_slow_timeouts_relative_paths_and_proxies() {
    let dir = tempfile::tempdir().unwrap();
    users_file(dir.path(), &[("romeo@example.net", "x")]);
    std::fs::write(
        dir.path().join("config.toml"),
        "timeout = \"6s\"\n[[backend]]\nname = \"local\"\ntype = \"file\"\npath = \"users.txt\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["--config", "config.toml", "check"])
        .current_dir(dir.path())
        .env_remove("EXTAUTH_BRIDGE_CONFIG")
        .env("HTTPS_PROXY", "http://proxy.invalid:3128")
        .output()
        .unwrap();
    let report = stdout(&out);
    // Warnings only: exit 0.
    assert_eq!(code(&out), 0, "{report}");
    assert!(
        report.contains("protocol  warn") && report.contains("5 s"),
        "{report}"
    );
    assert!(
        report.contains("paths     warn")
            && report.contains("config file = config.toml")
            && report.contains("backend[0].path = users.txt"),
        "{report}"
    );
    assert!(report.contains("env       warn  HTTPS_PROXY"), "{report}");
}

// ---------------------------------------------------------------- query

fn query(config: &Path, args: &[&str], password: &str) -> std::process::Output {
    let mut all = vec!["--config", config.to_str().unwrap(), "query"];
    all.extend_from_slice(args);
    run(&all, format!("{password}\n").as_bytes())
}

#[test]
fn query_every_command_with_piped_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = setup(dir.path());
    let cases: &[(&[&str], &str, i32, &str)] = &[
        (
            &["auth", "romeo", "example.net"],
            "iheartjuliet",
            0,
            "-> 1 (yes)",
        ),
        (&["auth", "romeo", "example.net"], "nope", 1, "-> 0 (no)"),
        // The why says who answered and what the answer means.
        (
            &["auth", "romeo", "example.net"],
            "nope",
            1,
            "why      no: backend `local` answered no (wrong password or unknown user)\n",
        ),
        (
            &["auth", "romeo", "example.net"],
            "iheartjuliet",
            0,
            "why      yes: backend `local` answered yes (the password is right)\n",
        ),
        // The password keeps its colons and spaces, as on the wire.
        (
            &["auth", "juliet", "example.net"],
            "wherefore:art thou",
            0,
            "why      yes",
        ),
        (
            &["isuser", "juliet", "example.net"],
            "",
            0,
            "backend  local",
        ),
        (
            &["isuser", "tybalt", "example.net"],
            "",
            1,
            "why      no: backend `local` answered no (no such account)",
        ),
        (
            &["tryregister", "tybalt", "example.net"],
            "fight",
            0,
            "-> 1",
        ),
        (
            &["tryregister", "tybalt", "example.net"],
            "again",
            1,
            "-> 0",
        ),
        (&["auth", "tybalt", "example.net"], "fight", 0, "-> 1"),
        (&["setpass", "tybalt", "example.net"], "peace", 0, "-> 1"),
        (&["auth", "tybalt", "example.net"], "fight", 1, "-> 0"),
        (
            &["removeuser3", "tybalt", "example.net"],
            "fight",
            1,
            "-> 0",
        ),
        (
            &["removeuser3", "tybalt", "example.net"],
            "peace",
            0,
            "-> 1",
        ),
        (&["isuser", "tybalt", "example.net"], "", 1, "-> 0"),
        (&["tryregister", "benvolio", "example.net"], "x", 0, "-> 1"),
        (&["removeuser", "benvolio", "example.net"], "", 0, "-> 1"),
        (&["removeuser", "benvolio", "example.net"], "", 1, "-> 0"),
    ];
    for (args, password, want, expect) in cases {
        let out = query(&config, args, password);
        let text = stdout(&out);
        assert_eq!(code(&out), *want, "{args:?}\n{text}{}", stderr(&out));
        assert!(text.contains(expect), "{args:?}: want {expect:?}\n{text}");
        assert!(text.contains("took     "), "{text}");
        if password.len() > 4 {
            assert!(!text.contains(password), "password echoed: {text}");
        }
    }
}

#[test]
fn query_errors_exit_2_and_refusals_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let (config, users) = setup(dir.path());

    // An empty password gets the daemon's answer: 0, refused before any backend is asked,
    // so a no (exit 1), not an error; for every command that carries a password.
    for command in ["auth", "setpass", "tryregister", "removeuser3"] {
        let out = query(&config, &[command, "romeo", "example.net"], "");
        let text = stdout(&out);
        assert_eq!(code(&out), 1, "{command}: {text}{}", stderr(&out));
        assert!(
            text.contains("-> 0 (no)")
                && text.contains("why      refused: empty password (no backend asked)"),
            "{command}: {text}"
        );
    }
    let daemon = run(
        &["--config", config.to_str().unwrap()],
        b"auth:romeo:example.net:\n",
    );
    assert_eq!(stdout(&daemon), "0\n");
    // No line at all (end of input) is no password given: an error.
    let out = run(
        &[
            "--config",
            config.to_str().unwrap(),
            "query",
            "auth",
            "romeo",
            "example.net",
        ],
        b"",
    );
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no password given"),
        "{}",
        stderr(&out)
    );

    // Bad fields are usage errors.
    let out = query(&config, &["isuser", "ro:meo", "example.net"], "");
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("':'"));

    // A backend failure is an error, not a no.
    std::fs::remove_file(&users).unwrap();
    let out = query(&config, &["auth", "romeo", "example.net"], "iheartjuliet");
    let text = stdout(&out);
    assert_eq!(code(&out), 2, "{text}");
    assert!(
        text.contains("-> 0 (no)") && text.contains("why      internal: users file"),
        "{text}"
    );

    // A configuration error, before any password is read.
    std::fs::write(&config, "timeout = 4\n").unwrap();
    let out = query(&config, &["auth", "romeo", "example.net"], "x");
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("key `timeout`"), "{}", stderr(&out));

    // No route for the domain: a refusal, i.e. a no.
    users_file(dir.path(), &[("romeo@example.net", "x")]);
    std::fs::write(
        &config,
        format!(
            "[[backend]]\nname = \"local\"\ntype = \"file\"\npath = \"{}\"\n\
             [[route]]\ndomains = [\"example.net\"]\nbackends = [\"local\"]\n",
            users.display()
        ),
    )
    .unwrap();
    let out = query(&config, &["isuser", "romeo", "other.org"], "");
    assert_eq!(code(&out), 1);
    assert!(stdout(&out).contains("refused: no route for this domain"));
}

// ---------------------------------------------------------------- users

fn users(args: &[&str], input: &str) -> std::process::Output {
    let mut all = vec!["users"];
    all.extend_from_slice(args);
    run(&all, input.as_bytes())
}

#[test]
fn users_commands_round_trip_with_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("accounts");
    let f = file.to_str().unwrap();
    let daemon = |input: &str| stdout(&run(&["--users", f], input.as_bytes()));

    let out = users(&["add", f, "romeo@example.net"], "iheartjuliet\n");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("created"));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let out = users(&["add", f, "juliet@example.net"], "wherefore:art thou\n");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        daemon("auth:romeo:example.net:iheartjuliet\nauth:juliet:example.net:wherefore:art thou\nauth:romeo:example.net:x\n"),
        "1\n1\n0\n"
    );

    let out = users(&["list", f], "");
    assert_eq!(code(&out), 0);
    assert_eq!(stdout(&out), "romeo@example.net\njuliet@example.net\n");

    // Exists already / no such user: 1, and the file is untouched.
    let before = std::fs::read(&file).unwrap();
    let out = users(&["add", f, "romeo@example.net"], "other\n");
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("already exists"));
    let out = users(&["passwd", f, "tybalt@example.net"], "x\n");
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("no such user"));
    let out = users(&["remove", f, "tybalt@example.net"], "");
    assert_eq!(code(&out), 1);
    assert_eq!(std::fs::read(&file).unwrap(), before);

    // The daemon changes the file; the command sees it, and the reverse.
    assert_eq!(daemon("tryregister:tybalt:example.net:fight\n"), "1\n");
    let out = users(&["passwd", f, "tybalt@example.net"], "peace\n");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        daemon("auth:tybalt:example.net:fight\nauth:tybalt:example.net:peace\n"),
        "0\n1\n"
    );
    let out = users(&["remove", f, "romeo@example.net"], "");
    assert_eq!(code(&out), 0);
    assert_eq!(
        daemon("isuser:romeo:example.net\nisuser:juliet:example.net\n"),
        "0\n1\n"
    );
    let out = users(&["list", f], "");
    assert_eq!(stdout(&out), "juliet@example.net\ntybalt@example.net\n");
    assert!(!stdout(&out).contains('$'));
}

#[test]
fn a_repeated_account_is_a_warning_and_goes_away_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (config, file) = setup(dir.path());
    let cfg = config.to_str().unwrap();
    let f = file.to_str().unwrap();
    // Line 4 repeats line 2's account with another password.
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str(&format!("Romeo@example.net:{}\n", cheap_hash("second")));
    std::fs::write(&file, &text).unwrap();

    let out = run(&["--config", cfg, "check"], b"");
    let report = stdout(&out);
    assert_eq!(code(&out), 0, "{report}");
    assert!(report.contains("warn  local (file)"), "{report}");
    assert!(
        report.contains("line 4 repeats the account of line 2"),
        "{report}"
    );
    let out = users(&["list", f], "");
    assert_eq!(stdout(&out), "romeo@example.net\njuliet@example.net\n");
    assert!(stderr(&out).contains("line 4: repeats"), "{}", stderr(&out));

    // The first entry is used, and the daemon says which line it ignores.
    let out = run(
        &["--users", f],
        b"auth:romeo:example.net:iheartjuliet\nauth:romeo:example.net:second\n",
    );
    assert_eq!(stdout(&out), "1\n0\n");
    assert!(
        stderr(&out).contains("line=4") && stderr(&out).contains("first=2"),
        "{}",
        stderr(&out)
    );

    // A removal removes both: the second entry does not take over.
    let out = run(
        &["--users", f],
        b"removeuser:romeo:example.net\nisuser:romeo:example.net\nauth:romeo:example.net:second\n",
    );
    assert_eq!(stdout(&out), "1\n0\n0\n");
    assert!(!std::fs::read_to_string(&file).unwrap().contains("omeo"));

    // A password change rewrites the first and drops the rest.
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str(&format!("juliet@example.net:{}\n", cheap_hash("second")));
    std::fs::write(&file, &text).unwrap();
    let out = run(
        &["--users", f],
        b"setpass:juliet:example.net:new\nauth:juliet:example.net:new\n",
    );
    assert_eq!(stdout(&out), "1\n1\n");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.matches("juliet@").count(), 1, "{text}");
    assert!(!text.contains(&cheap_hash("second")), "{text}");
}

#[test]
fn users_usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("accounts");
    let f = f.to_str().unwrap();
    for (args, input, expect) in [
        (vec!["add", f, "romeo"], "x\n", "not user@domain"),
        (vec!["add", f, "ro meo@example.net"], "x\n", "storable"),
        (vec!["add", f, "@example.net"], "x\n", "storable"),
        (vec!["add", f, "romeo@example.net"], "\n", "empty password"),
        (vec!["list", f], "", "No such file"),
        (
            vec!["passwd", f, "romeo@example.net"],
            "x\n",
            "No such file",
        ),
    ] {
        let out = users(&args, input);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(expect), "{args:?}: {}", stderr(&out));
    }
    assert!(!Path::new(f).exists());
}

// ---------------------------------------------------------------- generate

#[test]
fn generate_writes_man_pages_and_completions_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man");
    let out = run(&["generate", "man", man.to_str().unwrap()], b"");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let page = std::fs::read_to_string(man.join("extauth-bridge.1")).unwrap();
    assert!(page.contains(".TH extauth-bridge 1"), "{page}");
    for sub in ["check", "query", "users", "hash\\-password"] {
        assert!(page.contains(sub), "{sub} not in the man page");
    }
    let check = std::fs::read_to_string(man.join("extauth-bridge-check.1")).unwrap();
    assert!(check.contains("\\-\\-json"), "{check}");
    assert!(man.join("extauth-bridge-users-add.1").exists());
    // The packaging helper itself stays out of the pages and the help.
    assert!(!man.join("extauth-bridge-generate.1").exists());
    assert!(!stdout(&run(&["--help"], b"")).contains("generate"));

    let completions = dir.path().join("completions");
    for (shell, file, needle) in [
        ("bash", "extauth-bridge.bash", "removeuser3"),
        ("zsh", "_extauth-bridge", "tryregister"),
        ("fish", "extauth-bridge.fish", "passwd"),
    ] {
        let out = run(
            &[
                "generate",
                "completions",
                shell,
                completions.to_str().unwrap(),
            ],
            b"",
        );
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let text = std::fs::read_to_string(completions.join(file)).unwrap();
        assert!(text.contains(needle), "{shell}: no {needle}");
    }
}

/// Runs the bridge as `id` (user and group, no supplementary groups), as the XMPP
/// server's account would; we must be root.
fn run_as(id: u32, args: &[&str], input: &[u8]) -> std::process::Output {
    run_with_ids(id, id, &[], args, input)
}

/// Runs the bridge as `uid`, with primary group `gid` and supplementary `groups`.
fn run_with_ids(
    uid: u32,
    gid: u32,
    groups: &[u32],
    args: &[&str],
    input: &[u8],
) -> std::process::Output {
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    let groups: Vec<libc::gid_t> = groups.to_vec();
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(args)
        .env_remove("EXTAUTH_BRIDGE_CONFIG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // SAFETY: only async-signal-safe calls between fork and exec. (Command::uid/gid would
    // drop every supplementary group, and `groups` is unstable.)
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The XMPP server's account, say: nobody/nogroup.
const NOBODY: u32 = 65534;

fn chown(path: &Path, uid: u32, gid: u32) {
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: valid NUL-terminated path.
    assert_eq!(unsafe { libc::chown(c_path.as_ptr(), uid, gid) }, 0);
}

#[test]
fn users_run_as_root_keep_the_files_owner() {
    use std::os::unix::fs::MetadataExt;
    if !is_root() {
        eprintln!("skipped: needs root to hand the file to another owner");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = users_file(dir.path(), &[("romeo@example.net", "x")]);
    chown(&file, NOBODY, NOBODY);
    // The daemon writes its temp files next to the users file.
    chown(dir.path(), NOBODY, NOBODY);
    let f = file.to_str().unwrap();
    // A lock left by an older version run as root: check, run as root too, points at it...
    let lock = dir.path().join("users.txt.lock");
    std::fs::write(&lock, "").unwrap();
    std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o600)).unwrap();
    let report = stdout(&run(&["--users", f, "check"], b""));
    assert!(
        report.contains("warn  users (file)") && report.contains("belongs to 0:0"),
        "{report}"
    );
    // ...and the next command run as root uses it but does not hand it over (only a lock it
    // creates itself: an existing one may be a planted hard link), and says what to do.
    let out = users(&["passwd", f, "romeo@example.net"], "new\n");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("users.txt.lock belongs to 0:0") && stderr(&out).contains("chown it"),
        "{}",
        stderr(&out)
    );
    chown(&lock, NOBODY, NOBODY);
    let out = users(&["add", f, "juliet@example.net"], "pw\n");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    for path in [file.clone(), lock] {
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (NOBODY, NOBODY), "{path:?}");
    }
    assert_eq!(
        stdout(&run(&["--users", f], b"auth:romeo:example.net:new\n")),
        "1\n"
    );
    // The daemon, as the file's owner, can still change it, and check sees nothing wrong.
    let out = run_as(
        NOBODY,
        &["--users", f],
        b"setpass:romeo:example.net:newer\nauth:romeo:example.net:newer\n",
    );
    assert_eq!(stdout(&out), "1\n1\n", "{}", stderr(&out));
    let out = run_as(NOBODY, &["--users", f, "check"], b"");
    assert!(
        stdout(&out).contains("ok    users (file)"),
        "{}",
        stdout(&out)
    );
    // The owner is given back inside the rewrite itself (before the rename), so the daemon
    // run as root keeps it too, not only the `users` command.
    let out = run(&["--users", f], b"setpass:juliet:example.net:x\n");
    assert_eq!(stdout(&out), "1\n", "{}", stderr(&out));
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (NOBODY, NOBODY));
}

#[test]
fn a_daemon_sharing_the_file_through_its_group_keeps_the_group() {
    use std::os::unix::fs::MetadataExt;
    if !is_root() {
        eprintln!("skipped: needs root to run as another account");
        return;
    }
    // root:nogroup, mode 0660 in a group-writable directory: the daemon's account writes it
    // as a member of that group (a supplementary one; its own group is another).
    let dir = tempfile::tempdir().unwrap();
    let file = users_file(dir.path(), &[("romeo@example.net", "x")]);
    for (path, mode) in [(dir.path(), 0o770), (file.as_path(), 0o660)] {
        chown(path, 0, NOBODY);
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let f = file.to_str().unwrap();
    let out = run_with_ids(
        NOBODY,
        12345,
        &[NOBODY],
        &["--users", f],
        b"setpass:romeo:example.net:new\n",
    );
    assert_eq!(stdout(&out), "1\n", "{}", stderr(&out));
    // The owner cannot be kept without root, the group can: the next process of the
    // server's account, whatever its own group, still gets in.
    assert_eq!(std::fs::metadata(&file).unwrap().gid(), NOBODY);
}

#[test]
fn check_with_only_command_line_backends_names_no_config_file_as_relative() {
    let dir = tempfile::tempdir().unwrap();
    let file = users_file(dir.path(), &[("romeo@example.net", "x")]);
    let out = run(&["--users", file.to_str().unwrap(), "check"], b"");
    let report = stdout(&out);
    assert_eq!(code(&out), 0, "{report}");
    assert!(report.contains("config    ok    command line"), "{report}");
    assert!(!report.contains("paths "), "{report}");
    // A relative users file is still worth the warning.
    let out = std::process::Command::new(BIN)
        .args(["--users", "users.txt", "check"])
        .current_dir(dir.path())
        .env_remove("EXTAUTH_BRIDGE_CONFIG")
        .output()
        .unwrap();
    let report = stdout(&out);
    assert!(
        report.contains("paths     warn  relative: backend[0].path = users.txt"),
        "{report}"
    );
}

#[test]
fn check_warns_when_the_users_file_cannot_be_changed() {
    let dir = tempfile::tempdir().unwrap();
    let file = users_file(dir.path(), &[("romeo@example.net", "x")]);
    let lock = dir.path().join("users.txt.lock");
    std::fs::write(&lock, "").unwrap();
    let f = file.to_str().unwrap();
    let mode = |path: &Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    // As left by a `users` command run as root before the fix: a root-only lock, next to a
    // file the server's account can read but not replace. Checked as that account.
    mode(dir.path(), 0o755);
    mode(&file, 0o644);
    let out = if is_root() {
        mode(&lock, 0o600);
        run_as(NOBODY, &["--users", f, "check"], b"")
    } else {
        // Our own files: take the write bits away instead.
        mode(dir.path(), 0o555);
        mode(&lock, 0o400);
        run(&["--users", f, "check"], b"")
    };
    mode(dir.path(), 0o755);
    let report = stdout(&out);
    // Logins work: warnings, not a failure.
    assert_eq!(code(&out), 0, "{report}");
    assert!(report.contains("warn  users (file)"), "{report}");
    assert!(
        report.contains("warn  read-only as this user")
            && report.contains("setpass, tryregister and removeuser will fail"),
        "{report}"
    );
    assert!(
        report.contains("cannot open the lock") && report.contains("users.txt.lock"),
        "{report}"
    );
    // Usable, but not "all is well" under two warnings.
    let verdict = report.lines().last().unwrap();
    assert!(
        verdict.starts_with("result    ok    usable, with ")
            && verdict.ends_with("warning(s) above"),
        "{report}"
    );
}

#[test]
fn users_passwd_when_the_daemon_removes_the_account_meanwhile() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let file = users_file(dir.path(), &[("romeo@example.net", "x")]);
    let f = file.to_str().unwrap();
    // `passwd` looks the account up, then waits for the password on stdin...
    let mut child = std::process::Command::new(BIN)
        .args(["users", "passwd", f, "romeo@example.net"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    // ...while the daemon removes it; the change under the lock must see that.
    assert_eq!(
        stdout(&run(&["--users", f], b"removeuser:romeo:example.net\n")),
        "1\n"
    );
    child.stdin.take().unwrap().write_all(b"new\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("no such user"), "{}", stderr(&out));
    assert!(!std::fs::read_to_string(&file).unwrap().contains("romeo"));
}
#[test]
fn check_unreachable_http_and_oauth2_backends_exit_1_with_hints() {
    let dir = tempfile::tempdir().unwrap();
    let (_, users) = setup(dir.path());
    // A port nothing listens on: bind, note the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = write_config(
        dir.path(),
        &format!(
            "timeout = \"2s\"\n\
             [[backend]]\nname = \"local\"\ntype = \"file\"\npath = \"{}\"\n\
             [[backend]]\nname = \"api\"\ntype = \"http\"\nurl = \"http://127.0.0.1:{port}/auth\"\n\
             [[backend]]\nname = \"idp\"\ntype = \"oauth2\"\nissuer = \"http://127.0.0.1:{port}/realms/x\"\n\
             client_id = \"bridge\"\nclient_auth = \"none\"\n",
            users.display()
        ),
    );
    let out = run(&["--config", config.to_str().unwrap(), "check"], b"");
    let report = stdout(&out);
    assert_eq!(code(&out), 1, "{report}");
    assert!(report.contains("ok    local (file)"), "{report}");
    for line in ["FAIL  api (http)", "FAIL  idp (oauth2)"] {
        let at = report
            .find(line)
            .unwrap_or_else(|| panic!("no {line:?} in\n{report}"));
        let next = report[at..].lines().nth(1).unwrap();
        assert!(next.contains("hint  not reachable from here"), "{report}");
    }
    assert!(report.contains("2 of 3 backend(s) failed"), "{report}");
}
