//! The HTTP (mod_auth_http) backend through the real binary, against real HTTP servers on
//! loopback that record what they received: every method and status, encodings, Basic
//! credentials, `$host`, chains and routes, failures, redirects, TLS and keep-alive.

mod common;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use common::*;
use tokio_rustls::rustls;

// ---------------------------------------------------------------------------------------
// The test API: mod_auth_http semantics over in-memory accounts, plus per-user misbehaviour.
// ---------------------------------------------------------------------------------------

/// One request as the API saw it.
#[derive(Debug, Clone)]
struct Received {
    http_method: Method,
    path: String,
    /// The last path segment: the mod_auth_http method.
    method: String,
    params: HashMap<String, String>,
    authorization: Option<String>,
    content_type: Option<String>,
    referer: Option<String>,
    version: Version,
}

impl Received {
    fn param(&self, name: &str) -> &str {
        self.params.get(name).map_or("<missing>", String::as_str)
    }
}

/// How the API answers any request about a given user, instead of the normal semantics.
#[derive(Clone)]
enum Misbehave {
    Status(u16, String),
    /// Never answers.
    Hang,
    Redirect(String),
    /// Redirects with this status to `{url}/{method}`, without the query string: whatever
    /// secret reaches the target, the bridge sent it.
    RedirectTo(u16, String),
}

#[derive(Default)]
struct ApiState {
    accounts: Mutex<HashMap<(String, String), String>>,
    received: Mutex<Vec<Received>>,
    misbehave: Mutex<HashMap<String, Misbehave>>,
    /// The exact `Authorization` header required, if any.
    basic: Option<String>,
    /// TCP connections accepted.
    connections: AtomicUsize,
    /// mod_auth_http methods answered 501 for every user: an API that does not implement them.
    unsupported: Mutex<HashSet<String>>,
}

struct TestApi {
    addr: SocketAddr,
    scheme: &'static str,
    state: Arc<ApiState>,
}

impl TestApi {
    fn start(accounts: &[(&str, &str)]) -> TestApi {
        TestApi::start_with(accounts, None, None)
    }

    fn start_with(
        accounts: &[(&str, &str)],
        basic: Option<&str>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> TestApi {
        TestApi::start_listening(accounts, basic, tls, false)
    }

    /// An https API whose port also answers plain http (told apart by the first byte), so
    /// that a redirect from `https://` to `http://` on the same host and port has somewhere
    /// to go.
    fn start_dual(
        accounts: &[(&str, &str)],
        basic: &str,
        tls: Arc<rustls::ServerConfig>,
    ) -> TestApi {
        TestApi::start_listening(accounts, Some(basic), Some(tls), true)
    }

    fn start_listening(
        accounts: &[(&str, &str)],
        basic: Option<&str>,
        tls: Option<Arc<rustls::ServerConfig>>,
        plain_too: bool,
    ) -> TestApi {
        let state = Arc::new(ApiState {
            basic: basic.map(|b| format!("Basic {}", b64(b))),
            ..ApiState::default()
        });
        for (jid, pass) in accounts {
            let (user, server) = jid.split_once('@').unwrap();
            state
                .accounts
                .lock()
                .unwrap()
                .insert((user.into(), server.into()), (*pass).into());
        }
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&state));
        let listener = runtime()
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let counted = Arc::clone(&state);
        let scheme = if tls.is_some() { "https" } else { "http" };
        runtime().spawn(async move {
            let listener = CountingListener {
                inner: listener,
                state: counted,
                tls: tls.map(tokio_rustls::TlsAcceptor::from),
                plain_too,
            };
            axum::serve(listener, app).await.unwrap();
        });
        TestApi {
            addr,
            scheme,
            state,
        }
    }

    fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    fn misbehave(&self, user: &str, how: Misbehave) {
        self.state
            .misbehave
            .lock()
            .unwrap()
            .insert(user.into(), how);
    }

    fn unsupported(&self, methods: &[&str]) {
        self.state
            .unsupported
            .lock()
            .unwrap()
            .extend(methods.iter().map(|m| (*m).to_owned()));
    }

    fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// The requests whose path starts with one of `prefixes`: where redirects led.
    fn received_under(&self, prefixes: &[&str]) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| prefixes.iter().any(|p| r.path.starts_with(p)))
            .collect()
    }

    fn last(&self) -> Received {
        self.received()
            .last()
            .cloned()
            .expect("the API got a request")
    }

    fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    fn password(&self, user: &str, server: &str) -> Option<String> {
        self.state
            .accounts
            .lock()
            .unwrap()
            .get(&(user.into(), server.into()))
            .cloned()
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// One runtime for every test server in this binary, on its own threads.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// Counts accepted TCP connections (the keep-alive test's evidence) and optionally
/// terminates TLS, offering HTTP/2 and HTTP/1.1 by ALPN.
struct CountingListener {
    inner: tokio::net::TcpListener,
    state: Arc<ApiState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Also accept plain http on the TLS port (a connection not starting with a handshake).
    plain_too: bool,
}

type BoxedIo = Box<dyn Io>;
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

impl axum::serve::Listener for CountingListener {
    type Io = BoxedIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (BoxedIo, SocketAddr) {
        loop {
            let Ok((tcp, addr)) = self.inner.accept().await else {
                continue;
            };
            self.state.connections.fetch_add(1, Ordering::SeqCst);
            match &self.tls {
                None => return (Box::new(tcp), addr),
                // A failed handshake (the client rejected our certificate) is the point
                // of some tests: wait for the next connection.
                Some(_) if self.plain_too && !starts_tls(&tcp).await => {
                    return (Box::new(tcp), addr)
                }
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(tcp).await {
                        return (Box::new(stream), addr);
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// Whether the client's first byte is a TLS handshake record (0x16).
async fn starts_tls(tcp: &tokio::net::TcpStream) -> bool {
    let mut first = [0u8; 1];
    matches!(tcp.peek(&mut first).await, Ok(1) if first[0] == 0x16)
}

async fn handle(
    State(state): State<Arc<ApiState>>,
    http_method: Method,
    version: Version,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let encoded = if http_method == Method::GET {
        uri.query().unwrap_or("").to_owned()
    } else {
        String::from_utf8(body.to_vec()).unwrap()
    };
    let params: HashMap<String, String> = serde_urlencoded::from_str(&encoded).unwrap();
    let path = uri.path().to_owned();
    let method = path.rsplit('/').next().unwrap_or("").to_owned();
    let header_text = |name| {
        headers
            .get(name)
            .map(|v: &header::HeaderValue| v.to_str().unwrap().to_owned())
    };
    let received = Received {
        http_method: http_method.clone(),
        path,
        method: method.clone(),
        params: params.clone(),
        authorization: header_text(header::AUTHORIZATION),
        content_type: header_text(header::CONTENT_TYPE),
        referer: header_text(header::REFERER),
        version,
    };
    state.received.lock().unwrap().push(received.clone());
    if let Some(expected) = &state.basic {
        if received.authorization.as_ref() != Some(expected) {
            return StatusCode::UNAUTHORIZED.into_response();
        }
    }
    if state.unsupported.lock().unwrap().contains(&method) {
        return StatusCode::NOT_IMPLEMENTED.into_response();
    }
    let user = received.param("user").to_owned();
    let server = received.param("server").to_owned();
    // Under /ok/ everything is a 200 `true`, as from an API that answers any GET; under
    // /moved/ (and /ok/) the misbehaviour that sent the request there is not repeated.
    if received.path.starts_with("/ok/") {
        return (StatusCode::OK, "true").into_response();
    }
    let misbehave = if received.path.starts_with("/moved/") {
        None
    } else {
        state.misbehave.lock().unwrap().get(&user).cloned()
    };
    match misbehave {
        Some(Misbehave::Status(code, body)) => {
            return (StatusCode::from_u16(code).unwrap(), body).into_response()
        }
        Some(Misbehave::Hang) => std::future::pending().await,
        Some(Misbehave::Redirect(to)) => {
            let location = format!("{to}/{method}?{encoded}");
            return (StatusCode::FOUND, [(header::LOCATION, location)]).into_response();
        }
        Some(Misbehave::RedirectTo(code, to)) => {
            let location = format!("{to}/{method}");
            let code = StatusCode::from_u16(code).unwrap();
            return (code, [(header::LOCATION, location)]).into_response();
        }
        None => {}
    }
    let key = (user, server);
    let pass = params.get("pass").cloned();
    let mut accounts = state.accounts.lock().unwrap();
    let truth = |b: bool| (StatusCode::OK, if b { "true\n" } else { "false" }).into_response();
    let expected_method = match method.as_str() {
        "check_password" | "user_exists" => Method::GET,
        _ => Method::POST,
    };
    if http_method != expected_method && method != "check_password" {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    match (method.as_str(), pass) {
        ("check_password", Some(p)) => truth(accounts.get(&key) == Some(&p)),
        ("user_exists", _) => truth(accounts.contains_key(&key)),
        ("set_password", Some(p)) => match accounts.get_mut(&key) {
            Some(old) => {
                *old = p;
                StatusCode::NO_CONTENT.into_response()
            }
            None => StatusCode::NOT_FOUND.into_response(),
        },
        ("register", Some(p)) => match accounts.entry(key) {
            Entry::Occupied(_) => StatusCode::CONFLICT.into_response(),
            Entry::Vacant(v) => {
                v.insert(p);
                StatusCode::CREATED.into_response()
            }
        },
        ("remove_user", _) => match accounts.remove(&key) {
            Some(_) => StatusCode::OK.into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        },
        _ => StatusCode::BAD_REQUEST.into_response(),
    }
}

// ---------------------------------------------------------------------------------------
// The bridge: configs, batch runs and an interactive driver (one request in flight).
// ---------------------------------------------------------------------------------------

/// Writes `config.toml` into `dir`: a 1 s deadline, then `body`.
fn config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, format!("timeout = \"1s\"\n{body}")).unwrap();
    path
}

fn http_backend(name: &str, url: &str, extra: &str) -> String {
    format!("[[backend]]\nname = \"{name}\"\ntype = \"http\"\nurl = \"{url}\"\n{extra}\n")
}

/// Runs the bridge on `config` with line-protocol `input` and returns the replies as a string
/// of `1`s and `0`s, plus stderr.
fn ask_lines(config: &Path, input: &str) -> (String, String) {
    let out = run(&["--config", config.to_str().unwrap()], input.as_bytes());
    assert!(out.status.success(), "{out:?}");
    let replies = String::from_utf8(out.stdout).unwrap().replace('\n', "");
    (replies, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A loopback URL where nothing listens (connection refused).
fn refused_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

/// The bridge as a server keeps it: one request written, its reply read, then the next.
struct Bridge {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    ejabberd: bool,
    stderr: tempfile::NamedTempFile,
}

impl Bridge {
    fn start(args: &[&str], ejabberd: bool) -> Bridge {
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new(BIN)
            .args(args)
            .env_remove("EXTAUTH_BRIDGE_CONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr.reopen().unwrap())
            .spawn()
            .unwrap();
        Bridge {
            stdin: child.stdin.take().unwrap(),
            stdout: child.stdout.take().unwrap(),
            child,
            ejabberd,
            stderr,
        }
    }

    fn ask(&mut self, request: &str) -> bool {
        if self.ejabberd {
            self.stdin.write_all(&frame(request)).unwrap();
            let mut reply = [0u8; 4];
            self.stdout.read_exact(&mut reply).unwrap();
            match reply {
                YES => true,
                NO => false,
                other => panic!("bad ejabberd reply {other:?}"),
            }
        } else {
            self.stdin
                .write_all(format!("{request}\n").as_bytes())
                .unwrap();
            let mut reply = [0u8; 2];
            self.stdout.read_exact(&mut reply).unwrap();
            match &reply {
                b"1\n" => true,
                b"0\n" => false,
                other => panic!("bad line reply {other:?}"),
            }
        }
    }

    /// Closes stdin, waits for exit 0 and returns the log.
    fn finish(mut self) -> String {
        drop(self.stdin);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status:?}");
        std::fs::read_to_string(self.stderr.path()).unwrap()
    }
}

// ---------------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------------

/// The full command set, through both wire protocols, one request in flight at a time.
#[test]
fn every_command_through_both_wire_protocols() {
    for ejabberd in [false, true] {
        let api = TestApi::start(&[("romeo@example.net", "iheartjuliet")]);
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), &http_backend("api", &api.url(), ""));
        let mut b = Bridge::start(&["--config", cfg.to_str().unwrap()], ejabberd);
        let script: &[(&str, bool, &str)] = &[
            (
                "auth:romeo:example.net:iheartjuliet",
                true,
                "check_password",
            ),
            ("auth:romeo:example.net:nope", false, "check_password"),
            ("isuser:romeo:example.net", true, "user_exists"),
            ("isuser:tybalt:example.net", false, "user_exists"),
            ("tryregister:tybalt:example.net:fight", true, "register"),
            ("tryregister:tybalt:example.net:again", false, "register"),
            ("setpass:tybalt:example.net:peace", true, "set_password"),
            ("setpass:nobody:example.net:x", false, "set_password"),
            ("auth:tybalt:example.net:peace", true, "check_password"),
            (
                "removeuser3:tybalt:example.net:wrong",
                false,
                "check_password",
            ),
            ("removeuser3:tybalt:example.net:peace", true, "remove_user"),
            ("isuser:tybalt:example.net", false, "user_exists"),
            ("tryregister:benvolio:example.net:x", true, "register"),
            ("removeuser:benvolio:example.net", true, "remove_user"),
            ("removeuser:benvolio:example.net", false, "remove_user"),
        ];
        for (request, answer, method) in script {
            assert_eq!(b.ask(request), *answer, "{request} (ejabberd: {ejabberd})");
            let r = api.last();
            assert_eq!(r.method, *method, "{request}");
            assert_eq!(r.path, format!("/{method}"));
            let expected = if r.method == "check_password" || r.method == "user_exists" {
                Method::GET
            } else {
                assert_eq!(
                    r.content_type.as_deref(),
                    Some("application/x-www-form-urlencoded")
                );
                Method::POST
            };
            assert_eq!(r.http_method, expected, "{request}");
        }
        // certauth and an empty password never reach the API.
        let before = api.received().len();
        assert!(!b.ask("certauth:romeo:example.net"));
        assert!(!b.ask("auth:romeo:example.net:"));
        assert_eq!(api.received().len(), before);
        b.finish();
        assert_eq!(api.password("tybalt", "example.net"), None);
    }
}

#[test]
fn awkward_names_and_passwords_arrive_intact() {
    let users = [
        ("o'brien&co", "a=b&c d"),
        ("mercutio", "pässwörd✓"),
        ("benvolio", "pa:ss:word"),
        ("tybalt", "+%2B%20 ?#/"),
    ];
    for method in ["GET", "POST"] {
        let api = TestApi::start(&[]);
        let dir = tempfile::tempdir().unwrap();
        let extra = format!("check_password_method = \"{method}\"");
        let cfg = config(dir.path(), &http_backend("api", &api.url(), &extra));
        let mut b = Bridge::start(&["--config", cfg.to_str().unwrap()], false);
        for (user, pass) in users {
            assert!(b.ask(&format!("tryregister:{user}:example.net:{pass}")));
            let r = api.last();
            assert_eq!(
                (r.param("user"), r.param("server"), r.param("pass")),
                (user, "example.net", pass)
            );
            assert!(b.ask(&format!("auth:{user}:example.net:{pass}")));
            let r = api.last();
            assert_eq!(r.http_method.as_str(), method);
            assert_eq!(r.param("pass"), pass);
            if method == "POST" {
                assert!(r.content_type.unwrap().contains("x-www-form-urlencoded"));
            }
            assert!(!b.ask(&format!("auth:{user}:example.net:{pass}x")));
            assert!(b.ask(&format!("setpass:{user}:example.net:{pass}{pass}")));
            assert_eq!(
                api.password(user, "example.net").as_deref(),
                Some(format!("{pass}{pass}").as_str())
            );
            assert!(b.ask(&format!("isuser:{user}:example.net")));
            assert_eq!(api.last().param("user"), user);
        }
        b.finish();
    }
}

/// Request templates (`{u}` is the user) and the users with the answer they must get.
type Templates = &'static [&'static str];
type Cases = &'static [(&'static str, bool)];

/// Each misbehaving user makes the API answer one status or body to every method.
#[test]
fn statuses_and_bodies_map_to_answers() {
    let api = TestApi::start(&[]);
    let cases: &[(&str, u16, &str)] = &[
        ("s500", 500, "true"),
        ("s404", 404, "true"),
        ("s403", 403, "true"),
        ("garbage", 200, "yes"),
        ("empty", 200, ""),
        ("truish", 200, "true."),
        ("false", 200, " false \n"),
        ("spaced", 200, " \ttrue\r\n "),
        ("s201", 201, ""),
        ("s204", 204, ""),
        ("s202", 202, ""),
        ("s409", 409, "exists"),
    ];
    for (user, code, body) in cases {
        api.misbehave(user, Misbehave::Status(*code, (*body).into()));
    }
    let oversized = format!("true{}", " ".repeat(70 * 1024));
    api.misbehave("huge", Misbehave::Status(200, oversized));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &http_backend("api", &api.url(), ""));
    // Which users answer yes to which requests (`{u}` is the user).
    let table: &[(Templates, Cases)] = &[
        // check_password / user_exists: only 200 with `true` is a yes.
        (
            &["auth:{u}:example.net:pw", "isuser:{u}:example.net"],
            &[
                ("s500", false),
                ("s404", false),
                ("s403", false),
                ("garbage", false),
                ("empty", false),
                ("truish", false),
                ("false", false),
                ("spaced", true),
                ("s201", false),
                ("huge", false),
            ],
        ),
        // set_password / remove_user: 200, 201, 204.
        (
            &["setpass:{u}:example.net:pw", "removeuser:{u}:example.net"],
            &[
                ("spaced", true),
                ("s201", true),
                ("s204", true),
                ("s202", false),
                ("s404", false),
                ("s500", false),
            ],
        ),
        // register: 201 only; 409 is a plain no.
        (
            &["tryregister:{u}:example.net:pw"],
            &[
                ("s201", true),
                ("s409", false),
                ("spaced", false),
                ("s204", false),
            ],
        ),
    ];
    let mut input = String::new();
    let mut expected = String::new();
    for (templates, users) in table {
        for (user, yes) in *users {
            for t in *templates {
                input.push_str(&t.replace("{u}", user));
                input.push('\n');
                expected.push(if *yes { '1' } else { '0' });
            }
        }
    }
    let (answers, _) = ask_lines(&cfg, &input);
    for ((request, want), got) in input.lines().zip(expected.chars()).zip(answers.chars()) {
        assert_eq!(got, want, "{request}");
    }
    assert_eq!(answers.len(), expected.len());
    // The logs say why.
    let (_, log) = ask_lines(&cfg, "auth:huge:example.net:pw\nauth:s500:example.net:pw\n");
    assert!(log.contains("max_body"), "{log}");
    assert!(log.contains("HTTP 500"), "{log}");
}

#[test]
fn basic_credentials_are_required_and_sent() {
    let creds = "api:s3cr:et";
    let api = TestApi::start_with(&[("romeo@example.net", "pw")], Some(creds), None);
    let dir = tempfile::tempdir().unwrap();
    let expected = format!("Basic {}", b64(creds));

    let cfg = config(dir.path(), &http_backend("api", &api.url(), ""));
    assert_eq!(ask_lines(&cfg, "auth:romeo:example.net:pw\n").0, "0");
    assert_eq!(api.last().authorization, None);

    let cfg = config(
        dir.path(),
        &http_backend("api", &api.url(), "credentials = \"api:wrong\""),
    );
    assert_eq!(ask_lines(&cfg, "auth:romeo:example.net:pw\n").0, "0");

    let inline = format!("credentials = \"{creds}\"");
    let cfg = config(dir.path(), &http_backend("api", &api.url(), &inline));
    let all = "auth:romeo:example.net:pw\nisuser:romeo:example.net\nsetpass:romeo:example.net:x\n";
    assert_eq!(ask_lines(&cfg, all).0, "111");
    let received = api.received();
    assert_eq!(received.len(), 5);
    assert_eq!(
        received[1].authorization.as_deref(),
        Some(format!("Basic {}", b64("api:wrong")).as_str())
    );
    assert!(received[2..]
        .iter()
        .all(|r| r.authorization.as_ref() == Some(&expected)));

    let file = dir.path().join("credentials");
    std::fs::write(&file, format!("{creds}\n")).unwrap();
    let from_file = format!("credentials_file = \"{}\"", file.display());
    let cfg = config(dir.path(), &http_backend("api", &api.url(), &from_file));
    assert_eq!(ask_lines(&cfg, "auth:romeo:example.net:x\n").0, "1");
    assert_eq!(api.last().authorization.as_ref(), Some(&expected));

    let cfg = config(
        dir.path(),
        &http_backend("api", &api.url(), "credentials_env = \"TEST_API_CREDS\""),
    );
    let out = run_env(
        &["--config", cfg.to_str().unwrap()],
        b"auth:romeo:example.net:x\n",
        &[("TEST_API_CREDS", creds)],
    );
    assert_eq!(out.stdout, b"1\n");
    assert_eq!(api.last().authorization.as_ref(), Some(&expected));
}

#[test]
fn host_is_substituted_per_request() {
    let api = TestApi::start(&[
        ("romeo@example.net", "pw"),
        ("juliet@chat.example.org", "pw"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{}/tenants/$host/xmpp/", api.url());
    let cfg = config(dir.path(), &http_backend("api", &url, ""));
    let (answers, _) = ask_lines(
        &cfg,
        "auth:romeo:example.net:pw\nauth:juliet:chat.example.org:pw\nisuser:x:evil.org/../x\n",
    );
    assert_eq!(answers, "110");
    // Sorted: the bridge may run the two requests concurrently.
    let mut paths: Vec<_> = api.received().iter().map(|r| r.path.clone()).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/tenants/chat.example.org/xmpp/check_password",
            "/tenants/example.net/xmpp/check_password",
        ],
        "a server name that would change the URL is refused before any request"
    );
}

#[test]
fn unsupported_falls_through_to_a_users_file() {
    let api = TestApi::start(&[
        ("romeo@example.net", "api-pw"),
        ("juliet@example.net", "api-pw"),
    ]);
    api.misbehave("mercutio", Misbehave::Status(501, String::new()));
    // A 501 with a long error page is still "not supported".
    api.misbehave("benvolio", Misbehave::Status(501, "x".repeat(100_000)));
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(
        dir.path(),
        &[
            ("mercutio@example.net", "file-pw"),
            ("juliet@example.net", "file-pw"),
            ("benvolio@example.net", "file-pw"),
        ],
    );
    let body = format!(
        "{}[[backend]]\nname = \"local\"\ntype = \"file\"\npath = \"{}\"\n",
        http_backend("api", &api.url(), ""),
        users.display()
    );
    let cfg = config(dir.path(), &body);
    let (answers, log) = ask_lines(
        &cfg,
        "auth:mercutio:example.net:file-pw\n\
         auth:mercutio:example.net:api-pw\n\
         isuser:mercutio:example.net\n\
         auth:romeo:example.net:api-pw\n\
         auth:juliet:example.net:file-pw\n\
         auth:benvolio:example.net:file-pw\n",
    );
    // 501 → the file decides; the API's own no (juliet) is final.
    assert_eq!(answers, "101101");
    assert!(log.contains("backend=\"local\""), "{log}");
}

/// `[[backend]] api` (the test API at `url`), then `[[backend]] local` (the users file), both
/// in one route for example.net; `route` adds keys to the route.
fn api_then_file(url: &str, users: &Path, route: &str) -> String {
    format!(
        "{}[[backend]]\nname = \"local\"\ntype = \"file\"\npath = \"{}\"\n\
         [[route]]\ndomains = [\"example.net\"]\nbackends = [\"api\", \"local\"]\n{route}\n",
        http_backend("api", url, ""),
        users.display()
    )
}

/// An API without register, set_password and remove_user (HTTP 501): the changes land in the
/// users file behind it, as README.md's "a users file for register" says.
#[test]
fn unsupported_changes_fall_through_to_a_users_file() {
    let api = TestApi::start(&[("romeo@example.net", "api-pw")]);
    api.unsupported(&["register", "set_password", "remove_user"]);
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path(), &[("juliet@example.net", "file-pw")]);
    let cfg = config(dir.path(), &api_then_file(&api.url(), &users, ""));
    // What the file alone answers, asked without the API.
    let file_says = |input: &str| {
        let out = run(&["--users", users.to_str().unwrap()], input.as_bytes());
        String::from_utf8(out.stdout).unwrap().replace('\n', "")
    };

    assert_eq!(
        ask_lines(&cfg, "tryregister:tybalt:example.net:fight\n").0,
        "1"
    );
    assert_eq!(file_says("auth:tybalt:example.net:fight\n"), "1");
    // The file's own no is final: the account exists there now.
    assert_eq!(
        ask_lines(&cfg, "tryregister:tybalt:example.net:again\n").0,
        "0"
    );
    assert_eq!(ask_lines(&cfg, "setpass:tybalt:example.net:peace\n").0, "1");
    assert_eq!(file_says("auth:tybalt:example.net:peace\n"), "1");
    assert_eq!(ask_lines(&cfg, "setpass:mercutio:example.net:x\n").0, "0");
    assert_eq!(ask_lines(&cfg, "removeuser:tybalt:example.net\n").0, "1");
    assert_eq!(file_says("isuser:tybalt:example.net\n"), "0");
    assert_eq!(ask_lines(&cfg, "removeuser:tybalt:example.net\n").0, "0");
    // The API was asked each time (and said 501), never the file first.
    let posts: Vec<String> = api
        .received()
        .iter()
        .filter(|r| r.http_method == Method::POST)
        .map(|r| r.method.clone())
        .collect();
    assert_eq!(
        posts,
        [
            "register",
            "register",
            "set_password",
            "set_password",
            "remove_user",
            "remove_user"
        ]
    );
    assert!(api.password("tybalt", "example.net").is_none());
    // What the API does implement it still decides: its no for juliet is final.
    assert_eq!(
        ask_lines(
            &cfg,
            "auth:romeo:example.net:api-pw\nauth:juliet:example.net:file-pw\n"
        )
        .0,
        "10"
    );
}

/// 502, 503 and 504 (a proxy in front of an API that is down, or the API saying so) are
/// "unavailable": with `on_unavailable = "next"` the users file decides; without it the answer
/// is 0. A 429 (rate limited) is never passed on.
#[test]
fn gateway_errors_fall_through_only_when_the_route_says_next() {
    let api = TestApi::start(&[("romeo@example.net", "api-pw")]);
    let page = "<html><body>502 Bad Gateway</body></html>";
    for (user, code) in [("s502", 502), ("s503", 503), ("s504", 504), ("s429", 429)] {
        api.misbehave(user, Misbehave::Status(code, page.into()));
    }
    // An error page over max_body still says "down".
    api.misbehave("s503big", Misbehave::Status(503, "x".repeat(100_000)));
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(
        dir.path(),
        &[
            ("s502@example.net", "file-pw"),
            ("s503@example.net", "file-pw"),
            ("s504@example.net", "file-pw"),
            ("s503big@example.net", "file-pw"),
            ("s429@example.net", "file-pw"),
        ],
    );
    let input = "auth:s502:example.net:file-pw\nauth:s503:example.net:file-pw\n\
                 auth:s504:example.net:file-pw\nauth:s503big:example.net:file-pw\n\
                 isuser:s503:example.net\nauth:s503:example.net:wrong\n\
                 auth:s429:example.net:file-pw\nauth:romeo:example.net:api-pw\n";

    let cfg = config(
        dir.path(),
        &api_then_file(&api.url(), &users, "on_unavailable = \"next\""),
    );
    let (answers, log) = ask_lines(&cfg, input);
    assert_eq!(answers, "11111001", "{log}");
    assert!(
        log.contains("HTTP 429") && log.contains("rate limited"),
        "{log}"
    );

    let cfg = config(dir.path(), &api_then_file(&api.url(), &users, ""));
    let (answers, log) = ask_lines(&cfg, input);
    assert_eq!(answers, "00000001", "{log}");
    assert!(
        log.contains("unavailable") && log.contains("HTTP 503") && log.contains("HTTP 504"),
        "{log}"
    );
    assert!(!log.contains("file-pw"), "{log}");
}

#[test]
fn server_errors_and_garbage_answer_zero_and_the_next_reply_is_right() {
    let api = TestApi::start(&[("romeo@example.net", "pw")]);
    api.misbehave("slow", Misbehave::Hang);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &http_backend("api", &api.url(), ""));

    // One request in flight, as the servers do: the hung one costs the 1 s deadline only.
    let mut b = Bridge::start(&["--config", cfg.to_str().unwrap()], true);
    let t = Instant::now();
    assert!(!b.ask("auth:slow:example.net:pw"));
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(b.ask("auth:romeo:example.net:pw"));
    assert!(!b.ask("auth:romeo:example.net:wrong"));
    assert!(!b.ask("isuser:slow:example.net"));
    assert!(b.ask("isuser:romeo:example.net"));
    let log = b.finish();
    assert!(log.contains("deadline"), "{log}");

    // All at once, as a burst: replies stay aligned with their requests.
    let (answers, _) = ask_lines(
        &cfg,
        "auth:slow:example.net:pw\nauth:romeo:example.net:pw\nisuser:slow:example.net\n\
         auth:romeo:example.net:no\nisuser:romeo:example.net\n",
    );
    assert_eq!(answers, "01001");

    // The API's own request_timeout, shorter than the deadline, says "timed out".
    let cfg = config(
        dir.path(),
        &http_backend("api", &api.url(), "request_timeout = \"200ms\""),
    );
    let (answers, log) = ask_lines(
        &cfg,
        "auth:slow:example.net:pw\nauth:romeo:example.net:pw\n",
    );
    assert_eq!(answers, "01");
    assert!(log.contains("timed out"), "{log}");
}

#[test]
fn a_backend_that_is_down_answers_zero_fast() {
    let dir = tempfile::tempdir().unwrap();
    let body = http_backend("api", &refused_url(), "");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, format!("timeout = \"4s\"\n{body}")).unwrap();
    let t = Instant::now();
    let (answers, log) = ask_lines(
        &path,
        "auth:romeo:example.net:pw\nisuser:romeo:example.net\n",
    );
    assert_eq!(answers, "00");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(
        log.contains("unavailable") && log.contains("cannot connect"),
        "{log}"
    );
}

#[test]
fn redirects_are_refused_unless_enabled_and_never_leave_the_origin() {
    let elsewhere = TestApi::start(&[("romeo@example.net", "pw")]);
    let api = TestApi::start(&[]);
    api.misbehave("romeo", Misbehave::Redirect(elsewhere.url()));
    let dir = tempfile::tempdir().unwrap();

    let cfg = config(
        dir.path(),
        &http_backend("api", &api.url(), "credentials = \"api:s3cret\""),
    );
    let (answers, log) = ask_lines(&cfg, "auth:romeo:example.net:pw\n");
    assert_eq!(answers, "0");
    assert!(log.contains("HTTP 302"), "{log}");
    assert!(elsewhere.received().is_empty());

    // Enabled, a redirect to another origin (here another port) is still refused: the GET
    // would take the password there, a 307 the POST's form (the new password).
    let cfg = config(
        dir.path(),
        &http_backend(
            "api",
            &api.url(),
            "credentials = \"api:s3cret\"\nfollow_redirects = true",
        ),
    );
    api.misbehave("juliet", Misbehave::RedirectTo(307, elsewhere.url()));
    let (answers, log) = ask_lines(
        &cfg,
        "auth:romeo:example.net:pw\nsetpass:juliet:example.net:new-secret\n",
    );
    assert_eq!(answers, "00", "{log}");
    assert!(
        elsewhere.received().is_empty(),
        "followed to another origin: {:?}",
        elsewhere.received()
    );
    assert!(log.contains("another origin"), "{log}");
    assert!(
        !log.contains("new-secret") && !log.contains("s3cret"),
        "{log}"
    );
}

/// Same-origin redirects are followed (that is what `follow_redirects` is for), with no
/// `Referer` (it would repeat the GET's query string, password included); a POST follows a
/// 307 with its form, and is never turned into a bodiless GET by a 302, whose 200 would
/// report a change that was never made.
#[test]
fn same_origin_redirects_carry_no_referer_and_never_turn_a_change_into_a_get() {
    let api = TestApi::start(&[("romeo@example.net", "pw"), ("juliet@example.net", "old")]);
    let moved = format!("{}/moved", api.url());
    api.misbehave("romeo", Misbehave::Redirect(moved.clone()));
    api.misbehave("juliet", Misbehave::RedirectTo(307, moved));
    api.misbehave(
        "mercutio",
        Misbehave::RedirectTo(302, format!("{}/ok", api.url())),
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &http_backend("api", &api.url(), "follow_redirects = true"),
    );
    let (answers, log) = ask_lines(
        &cfg,
        "auth:romeo:example.net:pw\nsetpass:juliet:example.net:new\nsetpass:mercutio:example.net:x\n",
    );
    assert_eq!(answers, "110", "{log}");
    let followed = api.received_under(&["/moved/", "/ok/"]);
    let paths: Vec<&str> = followed.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/moved/check_password", "/moved/set_password"]);
    for r in &followed {
        assert_eq!(r.referer, None, "Referer sent on a redirect");
    }
    assert_eq!(followed[1].http_method, Method::POST);
    assert_eq!(
        api.password("juliet", "example.net").as_deref(),
        Some("new")
    );
    assert!(
        log.contains("HTTP 302 would turn the POST into a GET"),
        "{log}"
    );
}

/// `https://` redirecting to `http://` on the same host and port: reqwest would keep the
/// Basic credentials (same host and port) and send them, and a 307's form, in clear.
#[test]
fn https_never_redirects_to_plain_http() {
    let (ca_pem, server_config) = test_pki();
    let api = TestApi::start_dual(
        &[
            ("romeo@example.net", "pw"),
            ("juliet@example.net", "old"),
            ("benvolio@example.net", "pw"),
        ],
        "api:s3cret",
        server_config,
    );
    let plain = format!("http://{}/moved", api.addr);
    api.misbehave("romeo", Misbehave::RedirectTo(302, plain.clone()));
    api.misbehave("juliet", Misbehave::RedirectTo(307, plain));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &ca_pem).unwrap();
    let extra = format!(
        "credentials = \"api:s3cret\"\nfollow_redirects = true\nca_file = \"{}\"",
        ca.display()
    );
    let cfg = config(dir.path(), &http_backend("api", &api.url(), &extra));
    let (answers, log) = ask_lines(
        &cfg,
        "auth:romeo:example.net:pw\nsetpass:juliet:example.net:new\nisuser:benvolio:example.net\n",
    );
    assert_eq!(answers, "001", "{log}");
    let in_clear: Vec<String> = api
        .received_under(&["/moved/"])
        .iter()
        .map(|r| format!("{} {:?}", r.path, r.authorization))
        .collect();
    assert!(in_clear.is_empty(), "sent over plain http: {in_clear:?}");
    assert_eq!(
        api.password("juliet", "example.net").as_deref(),
        Some("old")
    );
}

#[test]
fn keep_alive_uses_one_connection_for_many_requests() {
    let api = TestApi::start(&[("romeo@example.net", "pw")]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &http_backend("api", &api.url(), ""));
    let mut b = Bridge::start(&["--config", cfg.to_str().unwrap()], false);
    for i in 0..50 {
        let pass = if i % 2 == 0 { "pw" } else { "wrong" };
        assert_eq!(b.ask(&format!("auth:romeo:example.net:{pass}")), i % 2 == 0);
    }
    b.finish();
    assert_eq!(api.received().len(), 50);
    assert_eq!(api.connections(), 1);
}

/// A CA and a certificate for 127.0.0.1 and localhost that it signed, as PEM.
fn test_pki() -> (String, Arc<rustls::ServerConfig>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "extauth-bridge test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap(),
        )
        .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (ca_cert.pem(), Arc::new(server))
}

#[test]
fn tls_with_a_test_ca_is_accepted_and_a_wrong_ca_rejected() {
    let (ca_pem, server_config) = test_pki();
    let (other_ca_pem, _) = test_pki();
    let api = TestApi::start_with(&[("romeo@example.net", "pw")], None, Some(server_config));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &ca_pem).unwrap();
    let other = dir.path().join("other-ca.pem");
    std::fs::write(&other, &other_ca_pem).unwrap();

    let with = |file: &Path| format!("ca_file = \"{}\"", file.display());
    let cfg = config(dir.path(), &http_backend("api", &api.url(), &with(&ca)));
    let mut b = Bridge::start(&["--config", cfg.to_str().unwrap()], false);
    for _ in 0..5 {
        assert!(b.ask("auth:romeo:example.net:pw"));
        assert!(!b.ask("auth:romeo:example.net:nope"));
    }
    b.finish();
    // HTTP/2 by ALPN, all over one connection.
    assert!(api.received().iter().all(|r| r.version == Version::HTTP_2));
    assert_eq!(api.connections(), 1);

    let served = api.received().len();
    for cfg_body in [
        http_backend("api", &api.url(), &with(&other)),
        http_backend("api", &api.url(), ""),
    ] {
        let cfg = config(dir.path(), &cfg_body);
        let (answers, log) = ask_lines(&cfg, "auth:romeo:example.net:pw\n");
        assert_eq!(answers, "0");
        assert!(log.to_lowercase().contains("certificate"), "{log}");
    }
    assert_eq!(
        api.received().len(),
        served,
        "no request over a rejected connection"
    );
}

#[test]
fn routes_pick_the_chain_by_domain() {
    let net = TestApi::start(&[("romeo@example.net", "pw")]);
    let org = TestApi::start(&[("juliet@chat.example.org", "pw")]);
    let down = refused_url();
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path(), &[("tybalt@fallback.test", "pw")]);
    let body = format!(
        "{}{}{}[[backend]]\nname = \"local\"\ntype = \"file\"\npath = \"{}\"\n\
         [[route]]\ndomains = [\"example.net\"]\nbackends = [\"net\"]\n\
         [[route]]\ndomains = [\"*.example.org\"]\nbackends = [\"org\"]\n\
         [[route]]\ndomains = [\"fallback.test\"]\nbackends = [\"down\", \"local\"]\n\
         on_unavailable = \"next\"\n\
         [[route]]\ndomains = [\"closed.test\"]\nbackends = [\"down\", \"local\"]\n",
        http_backend("net", &net.url(), ""),
        http_backend("org", &org.url(), ""),
        http_backend("down", &down, ""),
        users.display()
    );
    let cfg = config(dir.path(), &body);
    let (answers, log) = ask_lines(
        &cfg,
        "auth:romeo:example.net:pw\n\
         auth:juliet:chat.example.org:pw\n\
         auth:juliet:example.org:pw\n\
         auth:romeo:other.test:pw\n\
         auth:tybalt:fallback.test:pw\n\
         auth:tybalt:closed.test:pw\n",
    );
    assert_eq!(answers, "110010");
    assert_eq!(net.received().len(), 1);
    assert_eq!(
        org.received().len(),
        1,
        "example.org itself is not *.example.org"
    );
    assert!(log.contains("no route for this domain"), "{log}");
    assert!(log.contains("unavailable"), "{log}");
}

#[test]
fn http_url_shortcut_alone_and_before_a_users_file() {
    let api = TestApi::start(&[("romeo@example.net", "pw")]);
    api.misbehave("mercutio", Misbehave::Status(501, String::new()));
    let url = api.url();
    let out = run(
        &["--http-url", &url],
        b"auth:romeo:example.net:pw\nauth:mercutio:example.net:pw\n",
    );
    assert_eq!(out.stdout, b"1\n0\n");

    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path(), &[("mercutio@example.net", "pw")]);
    let out = run(
        &["--http-url", &url, "--users", users.to_str().unwrap()],
        b"auth:romeo:example.net:pw\nauth:mercutio:example.net:pw\n",
    );
    assert_eq!(out.stdout, b"1\n1\n");

    let out = run(&["--http-url", "ftp://x"], b"");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("backend[0].url"), "{err}");
}

#[test]
fn config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("url = \"ftp://x\"", "backend[0].url"),
        ("url = 5", "backend[0].url"),
        (
            "url = \"http://x\"\nmax_body = \"big\"",
            "backend[0].max_body",
        ),
        (
            "url = \"http://x\"\nca_file = \"/nonexistent/ca.pem\"",
            "backend[0].ca_file",
        ),
        (
            "url = \"http://x\"\ncredentials_file = \"/nonexistent/creds\"",
            "backend[0].credentials_file",
        ),
        (
            "url = \"http://x\"\ncredentials_env = \"EXTAUTH_TEST_UNSET\"",
            "backend[0].credentials_env",
        ),
        (
            "url = \"http://x\"\ncredentials = \"a:b\"\ncredentials_env = \"X\"",
            "backend[0].credentials",
        ),
        (
            "url = \"http://x\"\nconnect_timeout = \"soon\"",
            "backend[0].connect_timeout",
        ),
        ("url = \"http://x\"\nfollow = true", "backend[0].follow"),
    ];
    for (keys, key) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(
            &path,
            format!("[[backend]]\nname = \"api\"\ntype = \"http\"\n{keys}\n"),
        )
        .unwrap();
        let out = run(&["--config", path.to_str().unwrap()], b"");
        assert_eq!(out.status.code(), Some(2), "{keys}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("`{key}`")), "{keys}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}

#[test]
fn secrets_never_reach_the_log_even_at_trace_level() {
    let creds = "api-user:basic-s3cret";
    let api = TestApi::start_with(&[("romeo@example.net", "user-pässword")], Some(creds), None);
    api.misbehave("broken", Misbehave::Status(500, "user-pässword".into()));
    let dir = tempfile::tempdir().unwrap();
    let down = refused_url();
    let (ca_pem, tls_config) = test_pki();
    let tls = TestApi::start_with(
        &[("romeo@example.net", "user-pässword")],
        Some(creds),
        Some(tls_config),
    );
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let input = "auth:romeo:example.net:user-pässword\n\
                 setpass:romeo:example.net:user-pässword\n\
                 auth:broken:example.net:user-pässword\n\
                 tryregister:new:example.net:user-pässword\n";
    let forbidden = [
        "user-pässword".to_owned(),
        "user-p%C3%A4ssword".to_owned(),
        "basic-s3cret".to_owned(),
        b64(creds),
    ];
    let ca_file = format!("ca_file = \"{}\"", ca.display());
    for format in ["text", "json"] {
        for (url, method, tls_extra) in [
            (api.url(), "GET", ""),
            (api.url(), "POST", ""),
            (down.clone(), "GET", ""),
            (tls.url(), "GET", ca_file.as_str()),
        ] {
            let extra = format!(
                "credentials = \"{creds}\"\ncheck_password_method = \"{method}\"\n{tls_extra}\n\
                 [log]\nlevel = \"trace\"\nformat = \"{format}\""
            );
            let cfg = config(dir.path(), &http_backend("api", &url, &extra));
            let (_, log) = ask_lines(&cfg, input);
            if !tls_extra.is_empty() {
                // HTTP/2's frame logging is covered too.
                assert!(log.contains("ALPN negotiated h2"), "{log}");
            }
            assert!(
                log.contains("check_password") || log.contains("connect"),
                "{log}"
            );
            for secret in &forbidden {
                assert!(
                    !log.contains(secret.as_str()),
                    "{secret} in the {format} log: {log}"
                );
            }
        }
    }
}

#[test]
fn check_probes_the_api() {
    use extauth_bridge::backend::http::{config::HttpBackendConfig, HttpBackend};
    use extauth_bridge::backend::Backend;
    let api = TestApi::start(&[("probe@example.net", "x")]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut config = HttpBackendConfig::new("api", format!("{}/$host", api.url()));
    let backend = HttpBackend::new(&config).unwrap();
    assert!(
        rt.block_on(backend.check()).is_err(),
        "$host needs check_account"
    );
    config.check_account = Some("probe@example.net".into());
    let backend = HttpBackend::new(&config).unwrap();
    let said = rt.block_on(backend.check()).unwrap();
    assert!(
        said.contains("answered true for probe@example.net"),
        "{said}"
    );
    assert_eq!(api.last().path, "/example.net/user_exists");

    api.misbehave("probe", Misbehave::Status(401, String::new()));
    assert!(rt.block_on(backend.check()).is_err());
}

#[test]
fn example_configs_are_valid() {
    use extauth_bridge::config::{BackendConfig, Config};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let kind = |b: &BackendConfig| match b {
        BackendConfig::File(_) => "file",
        BackendConfig::Http(_) => "http",
        BackendConfig::Oauth2(_) => "oauth2",
    };
    // config.toml is the .deb's conffile, /etc/extauth-bridge/config.toml.
    for (name, wanted) in [
        ("config.toml", "file"),
        ("http.toml", "http"),
        ("http-per-domain.toml", "http"),
        ("http-with-file-fallback.toml", "http"),
    ] {
        let c = Config::load(&dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(c.backends.iter().any(|b| kind(b) == wanted), "{name}");
    }
}

/// examples/http.toml (what its comments say to try), against the example server's
/// semantics (the test API).
#[test]
fn example_http_toml_works() {
    let api = TestApi::start_with(
        &[("romeo@example.net", "iheartjuliet")],
        Some("bridge:change-me"),
        None,
    );
    let dir = tempfile::tempdir().unwrap();
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/http.toml"))
            .unwrap()
            .replace("http://127.0.0.1:8080", &api.url());
    let cfg = dir.path().join("http.toml");
    std::fs::write(&cfg, text).unwrap();
    let (answers, _) = ask_lines(
        &cfg,
        "auth:romeo:example.net:iheartjuliet\nisuser:juliet:example.net\n\
         tryregister:juliet:example.net:balcony\nauth:juliet:example.net:balcony\n",
    );
    assert_eq!(answers, "1011");
    assert_eq!(api.last().http_method, Method::POST);
}

/// The example API server (examples/http_auth_server.rs), built into the same target
/// directory and profile as the bridge under test. `cargo test --all-targets` has built it
/// already, and then this is a quick no-op; a narrower run (`--test http_backend`) builds it.
fn example_api_server() -> PathBuf {
    let bin_dir = Path::new(BIN)
        .parent()
        .expect("the binary is in a directory");
    let target_dir = bin_dir
        .parent()
        .expect("the profile directory is in a target directory");
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args([
            "build",
            "--quiet",
            "--example",
            "http_auth_server",
            "--target-dir",
        ])
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if bin_dir.ends_with("release") {
        cargo.arg("--release");
    }
    // What cargo set for this test process describes this crate; build scripts that watch
    // such variables (ring's does) would otherwise be rerun, and everything above them rebuilt.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let per_crate = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|p| name.starts_with(p));
        if per_crate
            || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&&*name)
        {
            cargo.env_remove(&*name);
        }
    }
    let status = cargo.status().expect("run cargo");
    assert!(
        status.success(),
        "cargo build --example http_auth_server: {status}"
    );
    bin_dir.join("examples").join("http_auth_server")
}

/// README.md's complete HTTP example, run by bash as it is written there (after its build
/// line, with this build's binaries and a free port), so the snippet cannot drift from what
/// works: the build command, starting and waiting for the server, the config, the requests and
/// the answers the README promises.
#[test]
fn readme_http_example_runs_as_written() {
    let readme = include_str!("../README.md");
    let section = readme
        .split("A complete example, with the example API server")
        .nth(1)
        .expect("README.md has the HTTP example");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("a ```sh block follows");
    // "prints `1`, `0`, `1`, `1` (…": the answers, one per line.
    let after = &section[section.find(block).unwrap_or(0) + block.len()..];
    let prints = after
        .split("prints ")
        .nth(1)
        .and_then(|p| p.split(" (").next())
        .expect("the block is followed by what it prints");
    let expected: String = prints
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|answer| format!("{answer}\n"))
        .collect();
    assert_eq!(expected.len(), 8, "{prints}");

    let (build, steps) = block.split_once('\n').expect("more than one line");
    // A fresh clone has built nothing: the snippet builds exactly what it then runs.
    assert_eq!(
        build,
        "cargo build --release --bin extauth-bridge --example http_auth_server"
    );
    let server = "target/release/examples/http_auth_server";
    let bridge = "target/release/extauth-bridge";
    assert!(steps.contains(server) && steps.contains(bridge), "{steps}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = steps
        .replace(server, example_api_server().to_str().unwrap())
        .replace(bridge, BIN)
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));

    let dir = tempfile::tempdir().unwrap();
    let stdout = tempfile::NamedTempFile::new().unwrap();
    let stderr = tempfile::NamedTempFile::new().unwrap();
    // Files, not pipes: a server left running must not keep the test reading forever.
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -e\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{script}"
        ))
        .current_dir(dir.path())
        .env_remove("EXTAUTH_BRIDGE_CONFIG")
        .stdin(Stdio::null())
        .stdout(stdout.reopen().unwrap())
        .stderr(stderr.reopen().unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the README's HTTP example did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(stderr.path()).unwrap();
    assert!(status.success(), "{status}\n{log}");
    assert_eq!(
        std::fs::read_to_string(stdout.path()).unwrap(),
        expected,
        "{log}"
    );
    assert!(dir.path().join("http.toml").exists());
}

/// Where the first complete HTTP/1.1 request in `buf` ends, if it is all there.
fn request_end(buf: &[u8]) -> Option<usize> {
    let head = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let text = String::from_utf8_lossy(&buf[..head]).to_lowercase();
    let body: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    (buf.len() >= head + body).then_some(head + body)
}

/// A minimal HTTP/1.1 server that answers `true` (200) to everything and, like nginx's
/// `keepalive_timeout`, closes a connection that stays idle for `idle`.
fn closing_server(idle: Duration) -> (String, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = runtime()
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&connections);
    runtime().spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    let Ok(Ok(n)) = tokio::time::timeout(idle, tcp.read(&mut chunk)).await else {
                        return; // idle too long: close
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    // One complete request (headers, and a body of content-length) → reply.
                    while let Some(end) = request_end(&buf) {
                        buf.drain(..end);
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ntrue";
                        if tcp.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, connections)
}

#[test]
fn a_connection_the_server_closed_while_idle_is_not_a_failed_login() {
    let (url, connections) = closing_server(Duration::from_millis(200));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &http_backend("api", &url, ""));
    let mut b = Bridge::start(&["--config", cfg.to_str().unwrap()], false);
    for _ in 0..3 {
        // A change first: it is never retried, so only noticing the close can save it.
        assert!(b.ask("setpass:romeo:example.net:pw"));
        assert!(b.ask("auth:romeo:example.net:pw"));
        assert!(b.ask("isuser:romeo:example.net"));
        // Longer than the server keeps an idle connection.
        std::thread::sleep(Duration::from_millis(500));
    }
    b.finish();
    // Reused within a burst, replaced after each pause.
    assert_eq!(connections.load(Ordering::SeqCst), 3);
}
