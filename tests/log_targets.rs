//! `log.target = "journald"` and `"syslog"`: the test binds the Unix datagram socket the
//! daemon would own (there is no journald or syslog daemon here), points `log.socket` at it,
//! runs the real binary and parses what arrives.

mod common;

use std::collections::HashMap;
use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::pty::{readable, spawn, write_all, Terminal};
use common::{run, users_file, Live};

const PASSWORDS: [&str; 2] = ["right-r0meo", "wr0ng-guess"];

/// A users file with romeo and a config whose `[log]` section is `log`.
fn setup(dir: &Path, log: &str) -> PathBuf {
    let users = users_file(dir, &[("romeo@example.net", PASSWORDS[0])]);
    let config = dir.join("config.toml");
    fs::write(
        &config,
        format!(
            "[log]\n{log}\n\n[[backend]]\nname = \"users\"\ntype = \"file\"\npath = {users:?}\n"
        ),
    )
    .unwrap();
    config
}

/// The socket a journald or syslog daemon would listen on.
fn listen(dir: &Path) -> (UnixDatagram, PathBuf) {
    let path = dir.join("log.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    (socket, path)
}

/// Every datagram that arrives until none has for 500 ms.
fn received(socket: &UnixDatagram) -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    while let Ok(n) = socket.recv(&mut buf) {
        all.push(buf[..n].to_vec());
    }
    all
}

/// Runs the bridge on pipes with `--config`: a right password, a wrong one, a malformed
/// request. Checks the replies, a clean exit and a silent stderr; returns the bridge's pid.
fn run_three(config: &Path) -> u32 {
    let mut bridge = Live::spawn(&["--config", config.to_str().unwrap()]);
    let pid = bridge.child.id();
    bridge.send(
        format!(
            "auth:romeo:example.net:{}\nauth:romeo:example.net:{}\nbogus\n",
            PASSWORDS[0], PASSWORDS[1]
        )
        .as_bytes(),
    );
    assert_eq!(
        bridge.read_exact_within(6, Duration::from_secs(10)),
        b"1\n0\n0\n"
    );
    bridge.close_stdin();
    let (status, stderr) = bridge.wait_within(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    assert!(stderr.is_empty(), "{stderr:?}");
    pid
}

/// Parses one datagram of the journal's native protocol: `NAME=value\n`, or `NAME\n`, a
/// little-endian u64 length, the value and `\n`. Panics on anything else.
fn journal_fields(mut d: &[u8]) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    while !d.is_empty() {
        let end = d
            .iter()
            .position(|&b| b == b'\n')
            .expect("field ends in \\n");
        let line = &d[..end];
        let (name, value, rest) = match line.iter().position(|&b| b == b'=') {
            Some(eq) => (&line[..eq], &line[eq + 1..], &d[end + 1..]),
            None => {
                let len = u64::from_le_bytes(d[end + 1..end + 9].try_into().unwrap()) as usize;
                let value = &d[end + 9..end + 9 + len];
                assert_eq!(d[end + 9 + len], b'\n', "binary field ends in \\n");
                (line, value, &d[end + 10 + len..])
            }
        };
        let name = String::from_utf8(name.to_vec()).unwrap();
        assert!(
            !name.is_empty()
                && !name.starts_with('_')
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
            "bad field name {name:?}"
        );
        let value = String::from_utf8(value.to_vec()).unwrap();
        assert!(fields.insert(name, value).is_none(), "a field twice");
        d = rest;
    }
    fields
}

fn assert_no_password(datagrams: &[Vec<u8>]) {
    for d in datagrams {
        let text = String::from_utf8_lossy(d);
        for pw in PASSWORDS {
            assert!(!text.contains(pw), "password in a log datagram: {text}");
        }
    }
}

#[test]
fn journald_gets_native_protocol_datagrams() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, path) = listen(dir.path());
    let config = setup(
        dir.path(),
        &format!("level = \"debug\"\nformat = \"json\"\ntarget = \"journald\"\nsocket = {path:?}"),
    );
    let pid = run_three(&config);

    let datagrams = received(&socket);
    assert_no_password(&datagrams);
    let records: Vec<_> = datagrams.iter().map(|d| journal_fields(d)).collect();
    for r in &records {
        assert_eq!(r["SYSLOG_IDENTIFIER"], "extauth-bridge", "{r:?}");
        assert_eq!(r["SYSLOG_FACILITY"], "10", "authpriv by default: {r:?}");
        assert_eq!(r["SYSLOG_PID"], pid.to_string(), "{r:?}");
        // `format = "json"` does not apply: MESSAGE is text, never a JSON object.
        assert!(!r["MESSAGE"].starts_with('{'), "{r:?}");
    }
    let started = records
        .iter()
        .find(|r| r["MESSAGE"].starts_with("started "))
        .unwrap_or_else(|| panic!("no start line: {records:#?}"));
    assert_eq!(started["PRIORITY"], "6");
    let mut requests: Vec<_> = records
        .iter()
        .filter(|r| r["MESSAGE"].starts_with("request "))
        .collect();
    assert_eq!(requests.len(), 3, "{records:#?}");
    // Lines come in the order requests finish (the invalid one needs no hashing), replies
    // in request order: the id ties them. The fields also stand on their own.
    requests.sort_by_key(|r| r["ID"].parse::<u64>().unwrap());
    let outcomes: Vec<_> = requests
        .iter()
        .map(|r| (r["OUTCOME"].as_str(), r["PRIORITY"].as_str()))
        .collect();
    assert_eq!(outcomes, [("yes", "6"), ("no", "6"), ("invalid", "4")]);
    assert_eq!(requests[0]["USER"], "romeo");
    assert_eq!(requests[0]["SERVER"], "example.net");
    assert_eq!(requests[0]["COMMAND"], "auth");
    assert!(
        requests[0]["MESSAGE"].contains("user=\"romeo\""),
        "{:?}",
        requests[0]
    );
    assert!(requests[0]["CODE_FILE"].ends_with("server/answer.rs"));
}

/// `<PRI>Mmm dd hh:mm:ss extauth-bridge[PID]: MESSAGE` → (PRI, PID, MESSAGE).
fn syslog_line(d: &[u8]) -> (u8, u32, String) {
    let text = String::from_utf8(d.to_vec()).unwrap();
    let rest = text.strip_prefix('<').unwrap();
    let (pri, rest) = rest.split_once('>').unwrap();
    let (stamp, rest) = rest.split_at(15);
    let month = &stamp[..3];
    assert!(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
            .contains(&month),
        "{text}"
    );
    assert_eq!(&stamp[6..7], " ", "{text}");
    assert_eq!((&stamp[9..10], &stamp[12..13]), (":", ":"), "{text}");
    let rest = rest.strip_prefix(" extauth-bridge[").expect("tag");
    let (pid, message) = rest.split_once("]: ").unwrap();
    (
        pri.parse().unwrap(),
        pid.parse().unwrap(),
        message.to_owned(),
    )
}

#[test]
fn syslog_gets_rfc3164_lines_with_the_facility() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, path) = listen(dir.path());
    let config = setup(
        dir.path(),
        &format!("target = \"syslog\"\nfacility = \"auth\"\nsocket = {path:?}"),
    );
    let pid = run_three(&config);

    let datagrams = received(&socket);
    assert_no_password(&datagrams);
    let lines: Vec<_> = datagrams.iter().map(|d| syslog_line(d)).collect();
    assert!(lines.iter().all(|(_, p, _)| *p == pid), "{lines:?}");
    let mut requests: Vec<_> = lines
        .iter()
        .filter(|(_, _, m)| m.starts_with("request "))
        .map(|(pri, _, m)| (*pri, m.as_str()))
        .collect();
    assert_eq!(requests.len(), 3, "{lines:?}");
    // In request order (lines come in the order requests finish).
    requests.sort_by_key(|(_, m)| {
        let id = m.split_once(" id=").unwrap().1;
        id.split(' ').next().unwrap().parse::<u64>().unwrap()
    });
    // auth (4) * 8 + info (6) = 38; + warning (4) = 36.
    assert_eq!(requests[0].0, 38);
    assert!(requests[0].1.contains("outcome=\"yes\""), "{requests:?}");
    assert_eq!(requests[1].0, 38);
    assert!(requests[1].1.contains("outcome=\"no\""), "{requests:?}");
    assert_eq!(requests[2].0, 36);
    assert!(
        requests[2].1.contains("outcome=\"invalid\""),
        "{requests:?}"
    );
    // The level is the priority's business: the text has no timestamp or level of its own.
    assert!(!requests[0].1.contains("INFO"), "{requests:?}");
}

#[test]
fn no_daemon_listening_costs_nothing_but_the_lines() {
    for target in ["journald", "syslog"] {
        let dir = tempfile::tempdir().unwrap();
        let absent = dir.path().join("nobody-listens.sock");
        let config = setup(
            dir.path(),
            &format!("level = \"trace\"\ntarget = {target:?}\nsocket = {absent:?}"),
        );
        // Answered, exit 0, nothing on stderr (checked by run_three).
        run_three(&config);
    }
}

#[test]
fn a_full_socket_drops_lines_without_blocking_and_says_how_many() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, path) = listen(dir.path());
    let config = setup(
        dir.path(),
        &format!("target = \"journald\"\nsocket = {path:?}"),
    );
    let mut bridge = Live::spawn(&["--config", config.to_str().unwrap()]);
    assert_eq!(bridge.ask("isuser:romeo:example.net"), "1\n");
    // Nobody reads: the socket's queue fills after a few datagrams (net.unix.max_dgram_qlen,
    // 10 by default) and the sender's buffer soon after. Every request is still answered.
    const N: usize = 2000;
    bridge.send("isuser:romeo:example.net\n".repeat(N).as_bytes());
    let replies = bridge.read_exact_within(2 * N, Duration::from_secs(20));
    assert_eq!(replies, "1\n".repeat(N).as_bytes());

    // Whatever fitted, then (once there is room again, at the latest when the test drains
    // the socket and asks once more) a notice of how many were lost before the next line.
    let mut all = received(&socket);
    assert_eq!(bridge.ask("isuser:romeo:example.net"), "1\n");
    all.extend(received(&socket));
    let records: Vec<_> = all.iter().map(|d| journal_fields(d)).collect();
    let requests = records
        .iter()
        .filter(|r| r["MESSAGE"].starts_with("request "))
        .count();
    let notices: Vec<_> = records
        .iter()
        .filter(|r| r["MESSAGE"].starts_with("log lines dropped"))
        .collect();
    assert!(
        !notices.is_empty() && requests < N,
        "nothing was dropped: {requests} request lines arrived"
    );
    let dropped: usize = notices
        .iter()
        .map(|r| {
            assert_eq!(r["PRIORITY"], "4");
            r["COUNT"].parse::<usize>().unwrap()
        })
        .sum();
    // Every request line (the first, the N, the last) either arrived or was counted.
    assert_eq!(
        requests + dropped,
        N + 2,
        "{requests} arrived, {dropped} dropped"
    );
    let last = records.last().unwrap();
    assert!(last["MESSAGE"].starts_with("request "), "{last:?}");
    bridge.close_stdin();
    let (status, stderr) = bridge.wait_within(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    assert!(stderr.is_empty(), "{stderr:?}");
}

#[test]
fn under_the_pty_logs_go_to_the_journal_and_only_replies_to_the_pty() {
    // `journald` by name, and `auto`, which picks the journal under a pty when its socket
    // exists and no log file is set.
    for target in ["journald", "auto"] {
        let dir = tempfile::tempdir().unwrap();
        let (socket, path) = listen(dir.path());
        let config = setup(
            dir.path(),
            &format!("level = \"trace\"\ntarget = {target:?}\nsocket = {path:?}"),
        );
        // Written while echo is on: echoed, then dropped unanswered (and logged).
        let first = format!("auth:romeo:example.net:{}\n", PASSWORDS[0]);
        let pty = spawn(&config, &[], Terminal::Without, true, first.as_bytes());
        assert_eq!(pty.reply(), first.trim_end(), "{target}");
        pty.wait_until_ready();
        assert_eq!(
            pty.ask(&format!("auth:romeo:example.net:{}", PASSWORDS[1])),
            "0"
        );
        write_all(
            pty.master(),
            format!("auth:romeo:example.net:{}\n", PASSWORDS[0]).as_bytes(),
        );
        assert_eq!(pty.read_once(), b"1\n", "{target}");
        assert!(
            !readable(pty.master(), Duration::from_millis(300)),
            "{target}: something other than replies came out of the pty"
        );
        assert_eq!(pty.hang_up().code(), Some(0), "{target}");

        let datagrams = received(&socket);
        assert_no_password(&datagrams);
        let records: Vec<_> = datagrams.iter().map(|d| journal_fields(d)).collect();
        let discarded = records
            .iter()
            .find(|r| r["MESSAGE"].contains("discarded the queries waiting at start-up"))
            .unwrap_or_else(|| panic!("{target}: {records:#?}"));
        assert_eq!(discarded["PRIORITY"], "4");
        let outcomes: Vec<_> = records
            .iter()
            .filter(|r| r["MESSAGE"].starts_with("request "))
            .map(|r| r["OUTCOME"].as_str())
            .collect();
        assert_eq!(outcomes, ["no", "yes"], "{target}");
    }
}

#[test]
fn a_log_file_that_cannot_be_opened_is_a_config_error_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where a directory should be: fails even for root.
    fs::write(dir.path().join("not-a-dir"), "").unwrap();
    let log = dir.path().join("not-a-dir/bridge.log");
    let config = setup(dir.path(), &format!("target = \"file\"\nfile = {log:?}"));
    let cfg = config.to_str().unwrap();
    let out = run(&["--config", cfg], b"isuser:romeo:example.net\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "{:?}", out.stdout);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "extauth-bridge: config error in {cfg}: key `log.file`: "
        )),
        "{stderr}"
    );
    assert!(stderr.contains(log.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("Not a directory"), "{stderr}");
}
