//! ejabberd takes any reply to `setpass` as success, so a refused change is shown to the user
//! as done: the bridge logs every refusal at warn level, and `check` names the routes that
//! refuse (or may refuse) changes.

mod common;

use common::*;

fn check_json(config: &std::path::Path) -> serde_json::Value {
    let out = run(
        &["check", "--json", "--config", config.to_str().unwrap()],
        b"",
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn setpass_finding(report: &serde_json::Value) -> Option<serde_json::Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["item"] == "setpass")
        .cloned()
}

#[test]
fn check_names_routes_that_refuse_password_changes() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path(), &[("romeo@example.net", "pw")]);
    let config = dir.path().join("config.toml");
    let file = format!(
        "[[backend]]\nname = \"local\"\ntype = \"file\"\npath = \"{}\"\n",
        users.display()
    );
    std::fs::write(&config, &file).unwrap();
    assert_eq!(
        setpass_finding(&check_json(&config)),
        None,
        "a users file can change passwords"
    );

    std::fs::write(
        &config,
        format!(
            "[[backend]]\nname = \"idp\"\ntype = \"oauth2\"\nissuer = \"http://127.0.0.1:9\"\n\
             token_endpoint = \"http://127.0.0.1:9/token\"\n\
             userinfo_endpoint = \"http://127.0.0.1:9/userinfo\"\nclient_id = \"bridge\"\n\
             client_auth = \"none\"\nmode = \"password_grant\"\nverify = \"userinfo\"\n\
             {file}\n[[route]]\ndomains = [\"example.net\"]\nbackends = [\"idp\", \"local\"]\n"
        ),
    )
    .unwrap();
    let finding = setpass_finding(&check_json(&config)).expect("no setpass finding");
    assert_eq!(finding["level"], "warn", "{finding}");
    let detail = finding["detail"].as_str().unwrap();
    assert!(
        detail.contains("example.net") && detail.contains("ejabberd"),
        "{detail}"
    );
    assert!(detail.contains("mod_register"), "{detail}");

    let human = run(&["check", "--config", config.to_str().unwrap()], b"");
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("setpass") && l.contains("warn")),
        "{text}"
    );
}

#[test]
fn a_refused_setpass_is_logged_at_warn_an_accepted_one_at_info() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path(), &[("romeo@example.net", "pw")]);
    let out = run(
        &["--users", users.to_str().unwrap()],
        b"setpass:nobody:example.net:new\nsetpass:romeo:example.net:new\n",
    );
    assert_eq!(out.stdout, b"0\n1\n");
    let log = String::from_utf8_lossy(&out.stderr);
    let line = |user: &str| {
        log.lines()
            .find(|l| l.contains("command=\"setpass\"") && l.contains(&format!("user=\"{user}\"")))
            .unwrap_or_else(|| panic!("no setpass line for {user}: {log}"))
            .to_owned()
    };
    assert!(line("nobody").contains("WARN"), "{}", line("nobody"));
    assert!(line("romeo").contains("INFO"), "{}", line("romeo"));
}
