//! A keep-alive connection the server closes while the bridge is idle (an idle timeout, a
//! restart of the API) must not cost the next login. Found by tests/e2e (http
//! `backend_restarted`, oauth2 `idp_closes_idle_connections`): the runtime only runs while a
//! request is answered, so the connection task never saw the FIN and the next request went
//! into the dead connection.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use common::BIN;

/// Answers every request on a connection with 200 `true`, and closes each connection
/// `linger` after its first answer, as a server with a short keep-alive timeout does.
fn closing_api(linger: Duration) -> (String, thread::JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = thread::spawn(move || {
        let mut connections = 0;
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            connections += 1;
            if !answer_one(&mut stream) {
                return connections; // the test's stop connection
            }
            thread::sleep(linger);
            drop(stream); // FIN while the bridge waits for its next request
        }
        connections
    });
    (url, server)
}

/// Reads one GET request and answers it; false when the peer sent nothing.
fn answer_one(stream: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return false,
        }
    }
    let body = "true";
    let reply = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(reply.as_bytes()).unwrap();
    true
}

#[test]
fn a_connection_closed_while_idle_does_not_cost_a_login() {
    let (url, server) = closing_api(Duration::from_millis(100));
    let mut bridge = Command::new(BIN)
        .args(["--http-url", &url, "--protocol", "line"])
        .env_remove("EXTAUTH_BRIDGE_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = bridge.stdin.take().unwrap();
    let mut stdout = BufReader::new(bridge.stdout.take().unwrap());
    let mut answers = Vec::new();
    for _ in 0..4 {
        stdin
            .write_all(b"auth:romeo:example.net:iheartjuliet\n")
            .unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        answers.push(line.trim().to_owned());
        // the server closes the connection meanwhile; the bridge is idle
        thread::sleep(Duration::from_millis(400));
    }
    drop(stdin);
    let out = bridge.wait_with_output().unwrap();
    // let the server thread finish: one connection that sends nothing
    drop(TcpStream::connect(url.trim_start_matches("http://")).unwrap());
    let connections = server.join().unwrap();
    assert_eq!(
        answers,
        ["1", "1", "1", "1"],
        "bridge log:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        connections, 5,
        "one connection per request, plus the stop one"
    );
}
