//! A raw HTTP/1.1 server speaking mod_auth_http, which misbehaves on demand: for the fault
//! and redaction tests.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the test server answers the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// mod_auth_http done right: `true` for password `right` and for `user_exists`;
    /// 200 for the POSTs.
    Good,
    /// Headers and half a body, then a TCP reset.
    ResetMidResponse,
    /// Reads the request and never answers.
    Slow,
    /// 503 with a body of `true`: the status decides, not the body.
    ServerError,
    /// Not HTTP at all.
    Garbage,
    /// 200 and a 1 MiB body that starts with `true`.
    Oversized,
    /// 429 Too Many Requests: the API's rate limit, an answer and not an outage.
    RateLimited,
}

pub struct FaultServer {
    pub addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    /// The request line of every request received.
    seen: Arc<Mutex<Vec<String>>>,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

impl FaultServer {
    pub fn start() -> FaultServer {
        Self::start_on("127.0.0.1:0".parse().unwrap())
    }

    pub fn start_on(addr: SocketAddr) -> FaultServer {
        let listener = runtime().block_on(TcpListener::bind(addr)).unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(Mutex::new(Mode::Good));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (shared_mode, shared_seen) = (Arc::clone(&mode), Arc::clone(&seen));
        runtime().spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (mode, seen) = (Arc::clone(&shared_mode), Arc::clone(&shared_seen));
                tokio::spawn(serve_connection(stream, mode, seen));
            }
        });
        FaultServer { addr, mode, seen }
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// The request lines received so far.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Reads one request, head and body (by `Content-Length`); `None` at EOF.
async fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
        if !head[0].is_ascii_uppercase() {
            // Not HTTP (a TLS ClientHello, say): answer as web servers do, and hang up.
            let _ = stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
                .await;
            return None;
        }
    }
    let mut text = String::from_utf8_lossy(&head).into_owned();
    let length = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0usize);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.ok()?;
    text.push_str(&String::from_utf8_lossy(&body));
    text.push(' ');
    Some(text)
}

async fn serve_connection(
    mut stream: TcpStream,
    mode: Arc<Mutex<Mode>>,
    seen: Arc<Mutex<Vec<String>>>,
) {
    while let Some(head) = read_request(&mut stream).await {
        let request_line = head.lines().next().unwrap_or_default().to_owned();
        seen.lock().unwrap().push(request_line);
        let current = *mode.lock().unwrap();
        let response: Vec<u8> = match current {
            Mode::Good => {
                let yes = head.contains("pass=right ") || head.contains("/user_exists");
                if head.starts_with("POST") && !head.contains("/check_password") {
                    let r = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
                    if stream.write_all(r.as_bytes()).await.is_err() {
                        return;
                    }
                    continue;
                }
                let body = if yes { "true" } else { "false" };
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes()
            }
            Mode::ResetMidResponse => {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ntr")
                    .await;
                // Zero linger: closing sends a reset instead of a clean FIN.
                let _ = stream.set_zero_linger();
                return;
            }
            Mode::Slow => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                return;
            }
            Mode::ServerError => {
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\ntrue".to_vec()
            }
            Mode::Garbage => {
                let _ = stream.write_all(b"\x00\xffNOT HTTP\r\n\r\ntrue\r\n").await;
                return;
            }
            Mode::RateLimited => {
                b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n".to_vec()
            }
            Mode::Oversized => {
                let mut body = b"true".to_vec();
                body.resize(1 << 20, b' ');
                let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
                    .into_bytes();
                r.extend(body);
                r
            }
        };
        if stream.write_all(&response).await.is_err() {
            return;
        }
    }
}
