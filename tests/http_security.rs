//! SPEC §10 for the HTTP backend, through the real binary against raw HTTP/1.1 servers on
//! loopback that count what reaches them: only the network failing is "unavailable"; a
//! request the client's own input breaks, or a peer that answers badly, is a final `0`,
//! never retried into a second guess and never passed to the next backend.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;

/// How the raw server answers a request.
#[derive(Clone, Copy, Debug)]
enum Reply {
    /// 200 `true`, connection kept alive.
    Yes,
    /// Reads the request and closes the connection without a byte (nginx `return 444`).
    Close,
    /// A status line, then a line that is not a header.
    BadHeader,
    /// 100 KB of headers (1000 of them) before a 200 `true`.
    HugeHeaders,
    /// Answers the first request of each connection with 200 `true` and closes the
    /// connection, unanswered, when a second request arrives on it: what a bridge sees when a
    /// server's idle close crosses the next request on a kept-alive connection.
    FirstOnly,
}

struct RawServer {
    url: String,
    /// Request lines, in arrival order.
    requests: Arc<Mutex<Vec<String>>>,
    connections: Arc<AtomicUsize>,
}

impl RawServer {
    fn start(reply: Reply) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (seen, counted) = (Arc::clone(&requests), Arc::clone(&connections));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                counted.fetch_add(1, Ordering::SeqCst);
                let seen = Arc::clone(&seen);
                std::thread::spawn(move || serve(stream, reply, &seen));
            }
        });
        RawServer {
            url,
            requests,
            connections,
        }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Reads one request (head, and a body of `content-length`); its request line, or `None`
/// at EOF.
fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let length: usize = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    Some(text.lines().next().unwrap_or_default().to_owned())
}

fn serve(mut stream: TcpStream, reply: Reply, seen: &Mutex<Vec<String>>) {
    const YES: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ntrue";
    let mut answered = 0;
    while let Some(line) = read_request(&mut stream) {
        seen.lock().unwrap().push(line);
        let bytes: Vec<u8> = match reply {
            Reply::Yes => YES.to_vec(),
            Reply::Close => return,
            Reply::FirstOnly if answered > 0 => return,
            Reply::FirstOnly => YES.to_vec(),
            Reply::BadHeader => {
                b"HTTP/1.1 200 OK\r\nthis is not a header\r\ncontent-length: 4\r\n\r\ntrue".to_vec()
            }
            Reply::HugeHeaders => {
                let mut r = b"HTTP/1.1 200 OK\r\n".to_vec();
                for i in 0..1000 {
                    r.extend(format!("x-pad-{i:04}: {}\r\n", "a".repeat(88)).bytes());
                }
                r.extend(b"content-length: 4\r\n\r\ntrue");
                r
            }
        };
        if stream.write_all(&bytes).is_err() {
            return;
        }
        answered += 1;
    }
}

/// `timeout = "1s"`, the API at `url` then a users file, one route for example.net whose
/// failures fall through (`on_unavailable = "next"`).
fn api_then_file(dir: &Path, url: &str, accounts: &[(&str, &str)]) -> std::path::PathBuf {
    let users = users_file(dir, accounts);
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "timeout = \"1s\"\n\
             [[backend]]\nname = \"api\"\ntype = \"http\"\nurl = \"{url}\"\n\
             [[backend]]\nname = \"local\"\ntype = \"file\"\npath = \"{}\"\n\
             [[route]]\ndomains = [\"example.net\"]\nbackends = [\"api\", \"local\"]\n\
             on_unavailable = \"next\"\n",
            users.display()
        ),
    )
    .unwrap();
    path
}

/// Replies as a string of `1`s and `0`s, and the log.
fn ask(config: &Path, input: &str) -> (String, String) {
    let out = run(&["--config", config.to_str().unwrap()], input.as_bytes());
    assert!(out.status.success(), "{out:?}");
    (
        String::from_utf8(out.stdout).unwrap().replace('\n', ""),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A password whose percent-encoding makes the GET `check_password` URL longer than an
/// HTTP client can send (64 KiB): the request cannot be built, nothing reaches the network.
/// That is the client's doing, so it must not make the API look down and hand the login
/// to the users file behind it (which would say yes here).
#[test]
fn a_request_the_input_cannot_build_is_a_final_no_not_a_fall_through() {
    let api = RawServer::start(Reply::Yes);
    let dir = tempfile::tempdir().unwrap();
    let password = "%".repeat(25_000);
    let cfg = api_then_file(dir.path(), &api.url, &[("romeo@example.net", &password)]);
    let (answers, log) = ask(
        &cfg,
        &format!("auth:romeo:example.net:{password}\nauth:romeo:example.net:short\n"),
    );
    // The second login proves the API is up and asked: it answers yes to anything.
    assert_eq!(answers, "01", "{log}");
    assert_eq!(
        api.requests().len(),
        1,
        "only the buildable request was sent"
    );
    assert!(log.contains("outcome=\"protocol\""), "{log}");
    assert!(
        !log.contains("backend=\"local\""),
        "the file was consulted: {log}"
    );
    assert!(!log.contains("%%%%"), "the password reached the log");
}

/// A peer that accepted the request and then answered nothing, or garbage, or too many
/// headers, has answered: a final `0`, asked once (a retry would count every password guess
/// twice), and never passed to the users file behind it (which would say yes).
#[test]
fn a_peer_that_answers_badly_is_asked_once_and_never_falls_through() {
    for reply in [Reply::Close, Reply::BadHeader, Reply::HugeHeaders] {
        let api = RawServer::start(reply);
        let dir = tempfile::tempdir().unwrap();
        let cfg = api_then_file(dir.path(), &api.url, &[("romeo@example.net", "file-pw")]);
        let (answers, log) = ask(
            &cfg,
            "auth:romeo:example.net:file-pw\nisuser:romeo:example.net\n",
        );
        assert_eq!(answers, "00", "{reply:?}: {log}");
        let requests = api.requests();
        assert_eq!(requests.len(), 2, "{reply:?}: retried: {requests:?}");
        assert!(log.contains("outcome=\"protocol\""), "{reply:?}: {log}");
        assert!(
            !log.contains("backend=\"local\""),
            "{reply:?}: the file was consulted: {log}"
        );
    }
}

/// The legitimate retry stays: a kept-alive connection that the server closes under the
/// next request (its idle close crossing the request) costs no login; the question is asked
/// again on a new connection, and a change is never repeated.
#[test]
fn a_reused_connection_closed_under_a_request_is_retried_once() {
    let api = RawServer::start(Reply::FirstOnly);
    let dir = tempfile::tempdir().unwrap();
    let cfg = api_then_file(dir.path(), &api.url, &[]);
    let mut bridge = Live::spawn(&["--config", cfg.to_str().unwrap(), "--protocol", "line"]);
    for _ in 0..3 {
        assert_eq!(bridge.ask("auth:romeo:example.net:pw"), "1\n");
    }
    // The change goes on the connection the last retry opened, which closes under it.
    assert_eq!(bridge.ask("setpass:romeo:example.net:pw"), "0\n");
    bridge.close_stdin();
    bridge.wait_within(std::time::Duration::from_secs(5));
    let methods: Vec<String> = api
        .requests()
        .iter()
        .map(|l| l.split(['/', '?', ' ']).nth(2).unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        methods,
        [
            "check_password",
            "check_password", // closed under it: asked again
            "check_password",
            "check_password",
            "check_password",
            "set_password", // not repeated
        ]
    );
    assert_eq!(api.connections(), 3);
}

/// `$host` is a domain name, not a path: `..` or `.` (or an empty label) would move the
/// request to another path of the API (`/tenants/../xmpp` is `/xmpp`). Refused before any
/// request; a real domain still gets its own path.
#[test]
fn host_names_that_would_change_the_path_are_refused_without_a_request() {
    let api = RawServer::start(Reply::Yes);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!(
            "timeout = \"1s\"\n[[backend]]\nname = \"api\"\ntype = \"http\"\n\
             url = \"{}/tenants/$host/xmpp\"\n",
            api.url
        ),
    )
    .unwrap();
    let refused = [
        "..",
        ".",
        "a..b",
        ".a",
        "a.",
        "-..",
        "a b",
        "a\u{ff0e}b",
        "a%2e",
    ];
    let mut input: String = refused
        .iter()
        .map(|s| format!("isuser:romeo:{s}\n"))
        .collect();
    input.push_str("isuser:romeo:chat-1.example_net.org\n");
    // An internationalised host as the servers send it (nameprepped, in Unicode).
    input.push_str("isuser:romeo:b\u{fc}cher.example\n");
    let (answers, log) = ask(&path, &input);
    assert_eq!(answers, format!("{}11", "0".repeat(refused.len())), "{log}");
    // Requests may run side by side: compare as a set.
    let mut seen = api.requests();
    seen.sort();
    assert_eq!(
        seen,
        [
            "GET /tenants/b%C3%BCcher.example/xmpp/user_exists?user=romeo&server=b%C3%BCcher.example HTTP/1.1",
            "GET /tenants/chat-1.example_net.org/xmpp/user_exists?user=romeo&server=chat-1.example_net.org HTTP/1.1",
        ]
    );
}

/// The OAuth2 backend's twin: a token used as the password goes into the userinfo
/// request's `Authorization` header, and one with a control byte cannot be sent. That is
/// the client's input, not an IdP outage: a final `0`, not the users file's yes.
#[test]
fn an_oauth2_token_that_cannot_be_a_header_is_a_final_no() {
    let idp = RawServer::start(Reply::Yes);
    let dir = tempfile::tempdir().unwrap();
    let token = "tok\u{1}en";
    let users = users_file(dir.path(), &[("romeo@example.net", token)]);
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!(
            "timeout = \"1s\"\n\
             [[backend]]\nname = \"idp\"\ntype = \"oauth2\"\nmode = \"token\"\n\
             validate = \"userinfo\"\naudience = \"any\"\nuserinfo_endpoint = \"{}/userinfo\"\n\
             [[backend]]\nname = \"local\"\ntype = \"file\"\npath = \"{}\"\n\
             [[route]]\ndomains = [\"example.net\"]\nbackends = [\"idp\", \"local\"]\n\
             on_unavailable = \"next\"\n",
            idp.url,
            users.display()
        ),
    )
    .unwrap();
    let (answers, log) = ask(&path, &format!("auth:romeo:example.net:{token}\n"));
    assert_eq!(answers, "0", "{log}");
    assert!(idp.requests().is_empty());
    assert!(
        !log.contains("backend=\"local\""),
        "the file was consulted: {log}"
    );
}
