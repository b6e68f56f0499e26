//! No password, hash, credential or secret ever appears in stdout, stderr or the log file:
//! every command, every backend type, text and JSON logs at `trace`, on success and on every
//! kind of failure. Also: `Debug` of a configuration holding secrets redacts them.

mod common;

use std::fs;
use std::path::Path;

use common::http_server::{FaultServer, Mode};
use common::*;

/// Passwords sent by the "XMPP server". `right` is what the test API accepts.
const PASSWORDS: [&str; 3] = ["Pw-alpha-7731", "Pw:with:colons-8842", "Pw-ünïcode-9953"];
const CREDENTIALS: &str = "api-user:Cred-s3cret-6614";
const CLIENT_SECRET: &str = "Client-s3cret-4471";
const BEARER: &str = "Bearer-t0ken-5582";

/// Every command, with every password, plus malformed lines that still hold one.
fn requests() -> String {
    let mut input = String::new();
    for pw in PASSWORDS {
        for user in ["romeo", "nobody"] {
            for cmd in ["auth", "setpass", "tryregister", "removeuser3"] {
                input.push_str(&format!("{cmd}:{user}:example.net:{pw}\n"));
            }
            input.push_str(&format!("isuser:{user}:example.net\n"));
            input.push_str(&format!("removeuser:{user}:example.net\n"));
            input.push_str(&format!("certauth:{user}:example.net:{pw}\n"));
        }
        input.push_str(&format!("bogus:romeo:example.net:{pw}\n"));
        input.push_str(&format!("isuser:romeo:example.net:{pw}\n"));
        input.push_str(&format!("auth:ro\tmeo:example.net:{pw}\n"));
        input.push_str(&format!("auth:romeo:example.net:{pw}\0\n"));
        input.push_str(&format!("{pw}\n"));
        input.push_str(&format!(
            "auth:romeo:example.net:{pw}{}\n",
            "x".repeat(70_000)
        ));
    }
    input
}

/// What must never be seen: the passwords in every encoding a backend or log might use,
/// the stored hashes, the HTTP credentials.
fn forbidden(hashes: &[String]) -> Vec<String> {
    let mut all = Vec::new();
    let others = [CREDENTIALS, "Cred-s3cret-6614", CLIENT_SECRET, BEARER];
    for pw in PASSWORDS.iter().chain(others.iter()) {
        all.push(pw.to_string());
        all.push(form_encode(pw));
        all.push(format!("{pw:?}"));
        all.push(base64(pw.as_bytes()));
    }
    for hash in hashes {
        all.push(hash.clone());
        // The digest alone (the last `$` field), in case something prints only that.
        all.push(hash.rsplit('$').next().unwrap().to_owned());
    }
    all
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn assert_clean(what: &str, text: &str, forbidden: &[String]) {
    for secret in forbidden {
        assert!(
            !text.contains(secret.as_str()),
            "{secret:?} found in {what}:\n{text}"
        );
    }
}

/// Runs the whole request set through a bridge with `backends`, for each log format and
/// destination, and checks every output against what `forbidden` lists after the run.
fn run_everything(dir: &Path, backends: &str, forbidden: &dyn Fn() -> Vec<String>) {
    let log = dir.join("bridge.log");
    for format in ["text", "json"] {
        for target in ["stderr", "file"] {
            let _ = fs::remove_file(&log);
            let config = dir.join("config.toml");
            fs::write(
                &config,
                format!(
                    "timeout = \"1s\"\n[log]\nlevel = \"trace\"\nformat = \"{format}\"\n\
                     target = \"{target}\"\nfile = {log:?}\n{backends}"
                ),
            )
            .unwrap();
            let out = run(
                &["--config", config.to_str().unwrap()],
                requests().as_bytes(),
            );
            assert!(out.status.success(), "{out:?}");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(stdout.chars().all(|c| c == '0' || c == '1' || c == '\n'));
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            let logged = fs::read_to_string(&log).unwrap_or_default();
            // The logs are really at trace level and really went where asked.
            let written = if target == "file" { &logged } else { &stderr };
            assert!(
                written.contains("request"),
                "{format}/{target}: nothing logged"
            );
            let forbidden = forbidden();
            assert_clean("stderr", &stderr, &forbidden);
            assert_clean("the log file", &logged, &forbidden);
        }
    }
}

#[test]
fn users_file_backend_never_shows_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(
        dir.path(),
        &[
            ("romeo@example.net", PASSWORDS[0]),
            ("juliet@example.net", PASSWORDS[1]),
        ],
    );
    let stored_hashes = || -> Vec<String> {
        fs::read_to_string(&users)
            .unwrap()
            .lines()
            .filter_map(|l| Some(l.split_once(':')?.1.to_owned()))
            .collect()
    };
    let original = stored_hashes();
    assert_eq!(original.len(), 2);
    let backend = format!("[[backend]]\nname = \"users\"\ntype = \"file\"\npath = {users:?}\n");
    // The original hashes and those setpass/tryregister wrote during the run.
    let hashes = || forbidden(&[original.clone(), stored_hashes()].concat());
    run_everything(dir.path(), &backend, &hashes);
    assert_ne!(stored_hashes()[0], original[0], "setpass rewrote the file");
}

#[test]
fn http_backend_never_shows_secrets_in_any_state() {
    let server = FaultServer::start();
    let dir = tempfile::tempdir().unwrap();
    let backend = format!(
        "[[backend]]\nname = \"api\"\ntype = \"http\"\nurl = \"{}\"\ncredentials = \"{CREDENTIALS}\"\n",
        server.url()
    );
    let forbidden = || forbidden(&[]);
    for mode in [
        Mode::Good,
        Mode::ServerError,
        Mode::Garbage,
        Mode::ResetMidResponse,
    ] {
        server.set(mode);
        run_everything(dir.path(), &backend, &forbidden);
    }
    // POST for check_password: the password travels in a form body.
    server.set(Mode::Good);
    let backend = format!(
        "[[backend]]\nname = \"api\"\ntype = \"http\"\nurl = \"{}\"\n\
         check_password_method = \"POST\"\ncredentials = \"{CREDENTIALS}\"\n",
        server.url()
    );
    run_everything(dir.path(), &backend, &forbidden);
}

#[test]
fn oauth2_backend_never_shows_secrets_in_any_state() {
    // Every endpoint on a server that answers badly in each way: the secrets travel in every
    // request (client authentication, introspection bearer, passwords, tokens) and every
    // failure path logs something.
    let server = FaultServer::start();
    let dir = tempfile::tempdir().unwrap();
    let url = server.url();
    let forbidden = || forbidden(&[]);
    // `auto`: passwords starting `Pw-` are tokens (introspection), the others go through the
    // password grant (then userinfo). No issuer: no discovery, the endpoints are used at once.
    let backend = format!(
        "[[backend]]\nname = \"idp\"\ntype = \"oauth2\"\n\
         token_endpoint = \"{url}/token\"\nintrospection_endpoint = \"{url}/introspect\"\n\
         userinfo_endpoint = \"{url}/userinfo\"\nclient_id = \"bridge\"\n\
         client_secret = \"{CLIENT_SECRET}\"\nmode = \"auto\"\ntoken_prefixes = [\"Pw-\"]\n\
         audience = \"any\"\n"
    );
    for state in [
        Mode::Good,
        Mode::ServerError,
        Mode::Garbage,
        Mode::ResetMidResponse,
    ] {
        server.set(state);
        run_everything(dir.path(), &backend, &forbidden);
    }
    let backend = format!(
        "[[backend]]\nname = \"idp\"\ntype = \"oauth2\"\n\
         introspection_endpoint = \"{url}/introspect\"\nintrospection_bearer = \"{BEARER}\"\n\
         mode = \"token\"\naudience = \"any\"\n"
    );
    server.set(Mode::ServerError);
    run_everything(dir.path(), &backend, &forbidden);
    // The secrets really were sent, on every path.
    let seen = server.seen();
    for path in ["POST /token", "POST /introspect"] {
        assert!(
            seen.iter().any(|l| l.starts_with(path)),
            "no {path}: {seen:?}"
        );
    }
}

#[test]
fn hash_password_shows_the_hash_only() {
    let out = run(&["hash-password"], format!("{}\n", PASSWORDS[1]).as_bytes());
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("$argon2id$"));
    let forbidden = forbidden(&[]);
    assert_clean("stdout", &stdout, &forbidden);
    assert_clean("stderr", &String::from_utf8_lossy(&out.stderr), &forbidden);
}

#[test]
fn config_debug_redacts_secrets() {
    let text = format!(
        "[[backend]]\nname = \"api\"\ntype = \"http\"\nurl = \"http://127.0.0.1:1\"\n\
         credentials = \"{CREDENTIALS}\"\n\
         [[backend]]\nname = \"idp\"\ntype = \"oauth2\"\nissuer = \"http://127.0.0.1:1\"\n\
         token_endpoint = \"http://127.0.0.1:1/token\"\nclient_id = \"bridge\"\n\
         client_secret = \"{CLIENT_SECRET}\"\n\
         [[backend]]\nname = \"idp2\"\ntype = \"oauth2\"\nissuer = \"http://127.0.0.1:1\"\n\
         introspection_endpoint = \"http://127.0.0.1:1/i\"\nintrospection_bearer = \"{BEARER}\"\n\
         mode = \"token\"\naudience = \"any\"\n"
    );
    let config = extauth_bridge::config::Config::parse(&text, "t.toml").unwrap();
    let dump = format!("{config:?} {config:#?}");
    assert!(dump.contains("redacted"), "{dump}");
    assert_clean("Debug of Config", &dump, &forbidden(&[]));
}

/// The operator commands handle the same secrets: typed (here piped) passwords for `users`
/// and `query`, inline credentials for `check`. None of them may print one, at any log
/// level, in text or JSON.
#[test]
fn operator_commands_never_show_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    let u = users.to_str().unwrap();
    let line = |pw: &str| format!("{pw}\n");
    let mut outputs = Vec::new();
    let mut check = |what: &str, out: std::process::Output| {
        outputs.push((
            what.to_owned(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        ));
        out
    };
    let out = check(
        "users add",
        run(
            &["users", "add", u, "romeo@example.net"],
            line(PASSWORDS[0]).as_bytes(),
        ),
    );
    assert!(out.status.success(), "{out:?}");
    let out = check(
        "users passwd",
        run(
            &["users", "passwd", u, "romeo@example.net"],
            line(PASSWORDS[1]).as_bytes(),
        ),
    );
    assert!(out.status.success(), "{out:?}");
    check("users list", run(&["users", "list", u], b""));
    for (pw, answer) in [(PASSWORDS[1], Some(0)), (PASSWORDS[2], Some(1))] {
        let out = check(
            "query auth",
            run(
                &[
                    "--users",
                    u,
                    "--log-level",
                    "trace",
                    "query",
                    "auth",
                    "romeo",
                    "example.net",
                ],
                line(pw).as_bytes(),
            ),
        );
        assert_eq!(out.status.code(), answer, "{out:?}");
    }
    let config = dir.path().join("config.toml");
    fs::write(
        &config,
        format!(
            "timeout = \"1s\"\n\
             [[backend]]\nname = \"api\"\ntype = \"http\"\nurl = \"http://127.0.0.1:1\"\n\
             credentials = \"{CREDENTIALS}\"\n\
             [[backend]]\nname = \"idp\"\ntype = \"oauth2\"\n\
             token_endpoint = \"http://127.0.0.1:1/token\"\n\
             userinfo_endpoint = \"http://127.0.0.1:1/userinfo\"\n\
             client_id = \"bridge\"\nclient_secret = \"{CLIENT_SECRET}\"\n\
             [[backend]]\nname = \"idp2\"\ntype = \"oauth2\"\n\
             introspection_endpoint = \"http://127.0.0.1:1/i\"\n\
             introspection_bearer = \"{BEARER}\"\nmode = \"token\"\n\
             audience = \"any\"\n"
        ),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    for json in [false, true] {
        let mut args = vec!["--config", c, "--log-level", "trace", "check"];
        if json {
            args.push("--json");
        }
        let out = check("check", run(&args, b""));
        // Every backend unreachable: a failed check, and so a report that says why.
        assert_eq!(out.status.code(), Some(1), "{out:?}");
    }
    let hashes: Vec<String> = fs::read_to_string(&users)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':').map(|(_, h)| h.to_owned()))
        .collect();
    assert_eq!(hashes.len(), 1);
    let forbidden = forbidden(&hashes);
    for (what, text) in &outputs {
        assert_clean(what, text, &forbidden);
    }
}

/// A secret written as a bare number (or a boolean, an array…) is a type error, and serde's
/// message quotes the value: no config error may show it, wherever it goes (the terminal at
/// start-up, `check` in text and JSON, the log of a failed reload).
#[test]
fn config_errors_never_quote_a_secret_of_any_type() {
    let dir = tempfile::tempdir().unwrap();
    let users = common::users_file(dir.path(), &[("romeo@example.net", "pw")]);
    let config = dir.path().join("config.toml");
    let good = format!(
        "[[backend]]\nname = \"local\"\ntype = \"file\"\npath = \"{}\"\n",
        users.display()
    );
    let bad = [
        (
            "98127346519283",
            "[[backend]]\nname = \"idp\"\ntype = \"oauth2\"\nissuer = \"https://idp.example\"\n\
             client_id = \"bridge\"\nclient_secret = 98127346519283\nmode = \"password_grant\"\n",
        ),
        (
            "7741952213",
            "[[backend]]\nname = \"api\"\ntype = \"http\"\nurl = \"https://api.example\"\n\
             credentials = 7741952213\n",
        ),
        // A URL is no secret key, but one may carry credentials; an error found before
        // they are refused must not quote it.
        (
            "hunter2-in-a-url",
            "[[backend]]\nname = \"api\"\ntype = \"http\"\nurl = \"ftp://u:hunter2-in-a-url@api.example/x\"\n",
        ),
        (
            "hunter3-in-a-url",
            "[[backend]]\nname = \"api\"\ntype = \"http\"\nurl = \"https://u:hunter3-in-a-url@api.example/x?q\"\n",
        ),
        (
            "hunter2-in-an-array",
            "[[backend]]\nname = \"api\"\ntype = \"http\"\nurl = \"https://api.example\"\n\
             credentials = [\"hunter2-in-an-array\"]\n",
        ),
    ];
    for (secret, text) in bad {
        std::fs::write(&config, text).unwrap();
        let c = config.to_str().unwrap();
        let daemon = run(&["--config", c], b"");
        assert_eq!(daemon.status.code(), Some(2));
        let text_check = run(&["check", "--config", c], b"");
        let json_check = run(&["check", "--json", "--config", c], b"");
        for (what, out) in [
            ("start-up", &daemon),
            ("check", &text_check),
            ("check --json", &json_check),
        ] {
            let all = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(all.contains("config"), "{what}: {all}");
            assert!(!all.contains(secret), "{what} shows the secret: {all}");
        }

        std::fs::write(&config, &good).unwrap();
        let mut bridge = common::Live::spawn(&["--config", c]);
        assert_eq!(bridge.ask("auth:romeo:example.net:pw"), "1\n");
        std::fs::write(&config, text).unwrap();
        bridge.signal(libc::SIGHUP);
        let seen = bridge.wait_for_log("reload failed", std::time::Duration::from_secs(10));
        let log = seen.join("\n");
        assert!(!log.contains(secret), "reload log shows the secret: {log}");
        assert_eq!(bridge.ask("auth:romeo:example.net:pw"), "1\n");
    }
}
