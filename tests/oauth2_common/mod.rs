//! Helpers for the OAuth2 integration tests: the real bridge binary, driven one request at
//! a time (so a test can change the IdP's state between two requests), over either wire
//! protocol.
#![allow(dead_code)]

pub mod fake;
pub mod idp;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// Set by cargo for integration tests; examples (the benchmark) name their binary.
pub const BIN: &str = match option_env!("CARGO_BIN_EXE_extauth-bridge") {
    Some(path) => path,
    None => "target/debug/extauth-bridge",
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    Line,
    Ejabberd,
}

pub const BOTH: [Wire; 2] = [Wire::Line, Wire::Ejabberd];

/// A running bridge. Killed on drop; [`Bridge::finish`] closes stdin and returns stderr.
pub struct Bridge {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    wire: Wire,
    /// Drains stderr all along, so a chatty log can never fill the pipe and stall the bridge.
    stderr: Option<std::thread::JoinHandle<String>>,
}

/// A runtime for a loopback test server and its listener on `addr`, with the base URL.
/// The server lives as long as the runtime.
pub fn listen(
    addr: std::net::SocketAddr,
) -> (tokio::runtime::Runtime, tokio::net::TcpListener, String) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(addr))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    (runtime, listener, base)
}

/// Writes `[[backend]]` text (plus a top-level preamble) to `config.toml` in `dir`.
pub fn write_config(dir: &Path, backend_toml: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, format!("timeout = \"4s\"\n\n{backend_toml}")).unwrap();
    path
}

impl Bridge {
    pub fn start(config: &Path, wire: Wire) -> Bridge {
        Bridge::start_with(config, wire, &[])
    }

    /// Starts the bridge with extra arguments (e.g. `--log-level trace`).
    pub fn start_with(config: &Path, wire: Wire, args: &[&str]) -> Bridge {
        Bridge::start_bin(BIN, config, wire, args)
    }

    /// Starts the bridge with extra environment variables.
    pub fn start_env(config: &Path, wire: Wire, env: &[(&str, &str)]) -> Bridge {
        Bridge::spawn(BIN, config, wire, &[], env)
    }

    /// Starts a given bridge binary (the benchmark uses the release build).
    pub fn start_bin(bin: &str, config: &Path, wire: Wire, args: &[&str]) -> Bridge {
        Bridge::spawn(bin, config, wire, args, &[])
    }

    fn spawn(bin: &str, config: &Path, wire: Wire, args: &[&str], env: &[(&str, &str)]) -> Bridge {
        let protocol = match wire {
            Wire::Line => "line",
            Wire::Ejabberd => "ejabberd",
        };
        let mut child = Command::new(bin)
            .args(["--config", config.to_str().unwrap(), "--protocol", protocol])
            .args(args)
            .env_remove("EXTAUTH_BRIDGE_CONFIG")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn bridge");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut err_pipe = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err_pipe.read_to_string(&mut text);
            text
        });
        Bridge {
            child,
            stdin,
            stdout,
            wire,
            stderr: Some(stderr),
        }
    }

    /// Sends one request (`auth:user:server:password`) and returns the answer.
    pub fn ask(&mut self, request: &str) -> bool {
        let stdin = self.stdin.as_mut().unwrap();
        match self.wire {
            Wire::Line => {
                stdin.write_all(format!("{request}\n").as_bytes()).unwrap();
                stdin.flush().unwrap();
                let mut line = String::new();
                self.stdout.read_line(&mut line).unwrap();
                match line.as_str() {
                    "1\n" => true,
                    "0\n" => false,
                    other => panic!("bad reply {other:?} to {request:?}"),
                }
            }
            Wire::Ejabberd => {
                let mut frame = (request.len() as u16).to_be_bytes().to_vec();
                frame.extend_from_slice(request.as_bytes());
                stdin.write_all(&frame).unwrap();
                stdin.flush().unwrap();
                let mut reply = [0u8; 4];
                self.stdout.read_exact(&mut reply).unwrap();
                match reply {
                    [0, 2, 0, 1] => true,
                    [0, 2, 0, 0] => false,
                    other => panic!("bad reply {other:?} to {request:?}"),
                }
            }
        }
    }

    pub fn auth(&mut self, user: &str, server: &str, password: &str) -> bool {
        self.ask(&format!("auth:{user}:{server}:{password}"))
    }

    /// Closes stdin, waits for a clean exit and returns what was logged on stderr.
    pub fn finish(mut self) -> String {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        let err = self.stderr.take().unwrap().join().unwrap();
        assert!(status.success(), "bridge exited with {status}: {err}");
        err
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
