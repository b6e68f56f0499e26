//! The binary, spawned with pipes the way ejabberd and an admin's shell start it, against a
//! users file in a temp dir.

mod common;

use common::*;

fn accounts(dir: &std::path::Path) -> std::path::PathBuf {
    users_file(
        dir,
        &[
            ("romeo@example.net", "iheartjuliet"),
            ("juliet@example.net", "wherefore:art thou"),
            ("mercutio@example.net", "pässwörd✓"),
        ],
    )
}

#[test]
fn done_when_example_line_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let users = accounts(dir.path());
    let out = run(
        &["--users", users.to_str().unwrap()],
        b"auth:romeo:example.net:iheartjuliet\nauth:romeo:example.net:nope\nisuser:romeo:example.net\nbogus\n",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n0\n1\n0\n");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn line_protocol_full_command_set() {
    let dir = tempfile::tempdir().unwrap();
    let users = accounts(dir.path());
    let u = users.to_str().unwrap();
    let input = "auth:juliet:example.net:wherefore:art thou\r\n\
                 auth:mercutio:example.net:pässwörd✓\n\
                 auth:romeo:example.net:\n\
                 isuser:nobody:example.net\n\
                 isuser:ROMEO:example.net\n\
                 tryregister:tybalt:example.net:fight:me\n\
                 tryregister:tybalt:example.net:again\n\
                 auth:tybalt:example.net:fight:me\n\
                 setpass:tybalt:example.net:new pass\n\
                 auth:tybalt:example.net:fight:me\n\
                 auth:tybalt:example.net:new pass\n\
                 setpass:nobody:example.net:x\n\
                 removeuser3:tybalt:example.net:wrong\n\
                 isuser:tybalt:example.net\n\
                 removeuser3:tybalt:example.net:new pass\n\
                 isuser:tybalt:example.net\n\
                 tryregister:benvolio:example.net:peace\n\
                 removeuser:benvolio:example.net\n\
                 removeuser:benvolio:example.net\n\
                 certauth:romeo:example.net\n\
                 auth:romeo:other.org:iheartjuliet\n";
    let out = run(&["--users", u], input.as_bytes());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1\n1\n0\n0\n1\n1\n0\n1\n1\n0\n1\n0\n0\n1\n1\n0\n1\n1\n0\n0\n0\n"
    );
    assert!(out.status.success());
    // The file is still a valid users file, with comments kept and only romeo, juliet and
    // mercutio left.
    let text = std::fs::read_to_string(&users).unwrap();
    assert!(text.starts_with("# test accounts\n"));
    let jids: Vec<_> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(
        jids,
        [
            "romeo@example.net",
            "juliet@example.net",
            "mercutio@example.net"
        ]
    );
    // The daemon never leaves temp files behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn ejabberd_protocol_full_command_set() {
    let dir = tempfile::tempdir().unwrap();
    let users = accounts(dir.path());
    let requests = [
        ("auth:romeo:example.net:iheartjuliet", YES),
        ("auth:romeo:example.net:nope", NO),
        ("isuser:romeo:example.net", YES),
        ("", NO),
        ("bogus", NO),
        ("auth:juliet:example.net:wherefore:art thou", YES),
        ("tryregister:tybalt:example.net:x:y", YES),
        ("auth:tybalt:example.net:x:y", YES),
        ("setpass:tybalt:example.net:z", YES),
        ("auth:tybalt:example.net:z", YES),
        ("removeuser:tybalt:example.net", YES),
        ("isuser:tybalt:example.net", NO),
    ];
    let mut input = Vec::new();
    let mut expected = Vec::new();
    for (req, reply) in requests {
        input.extend(frame(req));
        expected.extend(reply);
    }
    for protocol in ["ejabberd", "auto"] {
        std::fs::remove_file(&users).ok();
        let users = accounts(dir.path());
        let out = run(
            &["--users", users.to_str().unwrap(), "--protocol", protocol],
            &input,
        );
        assert_eq!(out.stdout, expected, "protocol {protocol}");
        assert!(out.status.success());
    }
}

#[test]
fn truncated_ejabberd_frame_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let users = accounts(dir.path());
    let mut input = frame("isuser:romeo:example.net");
    input.extend(&frame("auth:romeo:example.net:iheartjuliet")[..10]);
    let out = run(&["--users", users.to_str().unwrap()], &input);
    assert_eq!(out.stdout, YES);
    assert!(out.status.success());
}

#[test]
fn stdout_holds_only_replies_even_at_trace_level() {
    let dir = tempfile::tempdir().unwrap();
    let users = accounts(dir.path());
    for format in ["text", "json"] {
        let out = run(
            &[
                "--users",
                users.to_str().unwrap(),
                "--log-level",
                "trace",
                "--log-format",
                format,
            ],
            b"auth:romeo:example.net:iheartjuliet\nisuser:x:y\nnonsense:::\n",
        );
        assert_eq!(out.stdout, b"1\n0\n0\n");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("request"), "logs go to stderr: {stderr}");
        assert!(
            !stderr.contains("iheartjuliet"),
            "password in logs: {stderr}"
        );
        assert!(!stderr.contains("$argon2"), "hash in logs: {stderr}");
    }
}

#[test]
fn empty_input_exits_zero_with_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let users = accounts(dir.path());
    let out = run(&["--users", users.to_str().unwrap()], b"");
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_config_exits_2_with_one_line_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "timeout = \"soon\"\n").unwrap();
    let out = run(&["--config", cfg.to_str().unwrap()], b"isuser:a:b\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(cfg.to_str().unwrap()) && err.contains("`timeout`"),
        "{err}"
    );

    std::fs::write(
        &cfg,
        "[[backend]]\nname = \"x\"\ntype = \"file\"\npaht = \"/x\"\n",
    )
    .unwrap();
    let out = run_env(
        &[],
        b"",
        &[("EXTAUTH_BRIDGE_CONFIG", cfg.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("backend[0].paht"), "{err}");

    let out = run(&["--config", "/nonexistent/config.toml"], b"");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn config_file_backend_and_routes() {
    let dir = tempfile::tempdir().unwrap();
    let users = accounts(dir.path());
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "protocol = \"line\"\ntimeout = \"2s\"\n[log]\ntarget = \"none\"\n\
             [[backend]]\nname = \"local\"\ntype = \"file\"\npath = {:?}\n\
             [[route]]\ndomains = [\"example.net\"]\nbackends = [\"local\"]\n",
            users
        ),
    )
    .unwrap();
    let out = run(
        &["--config", cfg.to_str().unwrap()],
        b"auth:romeo:example.net:iheartjuliet\nauth:romeo:example.org:iheartjuliet\n",
    );
    assert_eq!(out.stdout, b"1\n0\n");
    assert!(out.stderr.is_empty(), "log target none");
}

#[test]
fn hash_password_prints_a_verifiable_phc_string() {
    let out = run(&["hash-password"], b"s3cret:pass\n");
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap();
    assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("u");
    std::fs::write(&users, format!("a@b:{hash}")).unwrap();
    let out = run(
        &["--users", users.to_str().unwrap()],
        b"auth:a:b:s3cret:pass\nauth:a:b:s3cret\n",
    );
    assert_eq!(out.stdout, b"1\n0\n");
}

#[test]
fn users_file_changes_by_another_process_are_seen() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let users = accounts(dir.path());
    let mut child = Command::new(BIN)
        .args(["--users", users.to_str().unwrap(), "--log-target", "none"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut ask = |q: &str| {
        stdin.write_all(q.as_bytes()).unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        line
    };
    assert_eq!(ask("isuser:paris:example.net\n"), "0\n");
    let mut text = std::fs::read_to_string(&users).unwrap();
    text.push_str(&format!("paris@example.net:{}\n", cheap_hash("county")));
    let tmp = dir.path().join("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &users).unwrap();
    assert_eq!(ask("isuser:paris:example.net\n"), "1\n");
    assert_eq!(ask("auth:paris:example.net:county\n"), "1\n");
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

#[test]
fn users_file_that_blocks_costs_the_deadline_not_the_loop() {
    // A FIFO blocks open(2) until a writer appears: like a hung network mount.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("users.fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = run(
        &["--users", fifo.to_str().unwrap(), "--timeout", "500ms"],
        b"auth:romeo:example.net:x\nisuser:romeo:example.net\n",
    );
    assert_eq!(out.stdout, b"0\n0\n");
    assert!(out.status.success());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

/// The `--help` text of each option, by long name.
fn help_blocks() -> Vec<(String, String)> {
    let out = run(&["--help"], b"");
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let mut blocks: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        // Option headers: `-c, --config <FILE>`, `    --timeout <DURATION>`.
        let header = trimmed.starts_with('-') && line.len() - trimmed.len() <= 6;
        match trimmed.split_whitespace().find(|w| w.starts_with("--")) {
            Some(long) if header => blocks.push((long[2..].to_owned(), String::new())),
            _ => {
                if let Some((_, text)) = blocks.last_mut() {
                    text.push_str(line.trim());
                    text.push(' ');
                }
            }
        }
    }
    blocks
}

#[test]
fn help_claims_only_the_real_defaults() {
    use clap::ValueEnum;
    use extauth_bridge::config::{self, Config, LogFormat, LogLevel, LogTarget};
    fn name<T: ValueEnum + Default>() -> String {
        T::default()
            .to_possible_value()
            .unwrap()
            .get_name()
            .to_owned()
    }
    let defaults = Config::default();
    let actual = [
        ("config", config::DEFAULT_CONFIG_PATH.to_owned()),
        ("protocol", name::<extauth_bridge::protocol::Protocol>()),
        (
            "timeout",
            humantime::format_duration(defaults.timeout).to_string(),
        ),
        ("log-level", name::<LogLevel>()),
        ("log-format", name::<LogFormat>()),
        ("log-target", name::<LogTarget>()),
        ("pty", name::<extauth_bridge::pty::PtyMode>()),
    ];
    let blocks = help_blocks();
    let mut claimed = Vec::new();
    for (flag, text) in &blocks {
        let Some((_, default)) = text.split_once("[default: ") else {
            continue;
        };
        // "[default: the config's `KEY`, else VALUE…]" or "[default: $VAR, else VALUE…]".
        let Some((before, after)) = default.split_once("else ") else {
            panic!("--{flag}: no `else VALUE` in {text}");
        };
        let value: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || "/._-".contains(*c))
            .collect();
        // The configuration key it names exists and takes that value.
        if let Some((_, key)) = before.split_once("the config's `") {
            let key = key.split('`').next().unwrap();
            let toml = format!("{key} = {value:?}\n");
            Config::parse(&toml, "help").unwrap_or_else(|e| panic!("--{flag}: {e}"));
        }
        claimed.push((flag.as_str(), value));
    }
    let claimed: Vec<(&str, &str)> = claimed.iter().map(|(f, v)| (*f, v.as_str())).collect();
    let actual: Vec<(&str, &str)> = actual.iter().map(|(f, v)| (*f, v.as_str())).collect();
    // Every option that claims a default, and only the true one.
    assert_eq!(claimed, actual);
    // The environment variable the default configuration comes from.
    let (_, config_help) = blocks.iter().find(|(f, _)| f == "config").unwrap();
    assert!(config_help.contains(&format!("${}", config::CONFIG_ENV)));
}

#[test]
fn version_prints_the_crate_version() {
    for flag in ["--version", "-V"] {
        let out = run(&[flag], b"");
        assert!(out.status.success());
        let expected = format!("extauth-bridge {}\n", env!("CARGO_PKG_VERSION"));
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    }
}

#[test]
fn parallel_registrations_from_several_processes_are_all_kept() {
    const PROCESSES: usize = 2;
    const EACH: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let users = accounts(dir.path());
    let f = users.to_str().unwrap().to_owned();
    // Piped, each process's requests follow one another; the processes race for the file.
    // A deadline far above the work: a refusal here must mean a lost update, not a slow box.
    let workers: Vec<_> = (0..PROCESSES)
        .map(|p| {
            let f = f.clone();
            std::thread::spawn(move || {
                let input: String = (0..EACH)
                    .map(|i| format!("tryregister:user{p}x{i}:example.net:pw{p}x{i}\n"))
                    .collect();
                run(&["--users", &f, "--timeout", "60s"], input.as_bytes())
            })
        })
        .collect();
    for (p, worker) in workers.into_iter().enumerate() {
        let out = worker.join().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "1\n".repeat(EACH),
            "process {p}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every account is there once, and every line parses.
    let out = run(&["users", "list", &f], b"");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8(out.stdout).unwrap();
    let mut listed: Vec<&str> = listed.lines().collect();
    listed.sort_unstable();
    let mut expected: Vec<String> = (0..PROCESSES)
        .flat_map(|p| (0..EACH).map(move |i| format!("user{p}x{i}@example.net")))
        .chain(["romeo", "juliet", "mercutio"].map(|u| format!("{u}@example.net")))
        .collect();
    expected.sort_unstable();
    let lost: Vec<&String> = expected
        .iter()
        .filter(|e| !listed.contains(&e.as_str()))
        .collect();
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert_eq!(listed, expected);
    // And they log in, from a fresh process reading the final file.
    let out = run(
        &["--users", &f],
        b"auth:user0x0:example.net:pw0x0\nauth:user1x49:example.net:pw1x49\nauth:romeo:example.net:iheartjuliet\n",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n1\n1\n");
}

/// HTTPS goes through rustls: the binary must not depend on the system's TLS libraries,
/// whose versions differ between the distributions it is copied to.
#[test]
fn the_binary_links_no_system_tls_library() {
    let out = std::process::Command::new("ldd")
        .arg(BIN)
        .output()
        .expect("ldd (libc-bin)");
    assert!(out.status.success(), "{out:?}");
    let libs = String::from_utf8_lossy(&out.stdout);
    assert!(libs.contains("libc.so"), "{libs}");
    for tls in ["libssl", "libcrypto", "libgnutls", "libnss3"] {
        assert!(!libs.contains(tls), "{tls}: {libs}");
    }
}
