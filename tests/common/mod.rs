//! Helpers shared by the integration tests: spawn the real binary with pipes, as the XMPP
//! servers do, and build users files with cheap hashes.
#![allow(dead_code)]

pub mod http_server;
pub mod oracle;
pub mod pty;
pub mod redis;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

pub const BIN: &str = env!("CARGO_BIN_EXE_extauth-bridge");

/// An argon2id hash with tiny parameters: same verification code path, fast tests.
pub fn cheap_hash(password: &str) -> String {
    let params = Params::new(64, 1, 1, None).unwrap();
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
    argon
        .hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

/// Writes a users file with the given `(jid, password)` pairs into `dir`.
pub fn users_file(dir: &Path, accounts: &[(&str, &str)]) -> PathBuf {
    let path = dir.join("users.txt");
    let mut text = String::from("# test accounts\n");
    for (jid, pw) in accounts {
        text.push_str(&format!("{jid}:{}\n", cheap_hash(pw)));
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// Holds the users file's write lock, as another bridge process rewriting it would, until
/// the returned file is dropped.
pub fn hold_write_lock(users: &Path) -> std::fs::File {
    let mut lock = users.as_os_str().to_owned();
    lock.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock)
        .unwrap();
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).unwrap();
    file
}

/// A FIFO at `path`: opening it for reading blocks until a writer comes, like a read on a
/// hung network mount.
pub fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
}

/// Runs the bridge with `args`, feeds it `input`, closes stdin and waits.
pub fn run(args: &[&str], input: &[u8]) -> Output {
    run_env(args, input, &[])
}

pub fn run_env(args: &[&str], input: &[u8], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("EXTAUTH_BRIDGE_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn bridge");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait bridge");
    writer.join().unwrap();
    out
}

/// One ejabberd frame.
pub fn frame(payload: &str) -> Vec<u8> {
    let mut v = (payload.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(payload.as_bytes());
    v
}

pub const YES: [u8; 4] = [0, 2, 0, 1];
pub const NO: [u8; 4] = [0, 2, 0, 0];

/// A running bridge with pipes, for tests that talk to it over time (signals, faults).
pub struct Live {
    pub child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: Option<std::process::ChildStdout>,
    stderr_lines: std::sync::mpsc::Receiver<String>,
}

impl Live {
    pub fn spawn(args: &[&str]) -> Live {
        Live::spawn_env(args, &[])
    }

    /// The bridge with three pipes, as the XMPP servers start it.
    fn child(args: &[&str], env: &[(&str, &str)]) -> std::process::Child {
        Command::new(BIN)
            .args(args)
            .env_remove("EXTAUTH_BRIDGE_CONFIG")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn bridge")
    }

    /// [`Live::spawn`] with extra environment variables (the debug-build test hooks).
    pub fn spawn_env(args: &[&str], env: &[(&str, &str)]) -> Live {
        let mut child = Live::child(args, env);
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Live {
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            child,
            stderr_lines: rx,
        }
    }

    /// Like [`Live::spawn`], but stderr is handed to the caller, unread: its lines never
    /// reach [`Live::wait_for_log`].
    pub fn spawn_keeping_stderr(args: &[&str]) -> (Live, std::process::ChildStderr) {
        let mut child = Live::child(args, &[]);
        let stderr = child.stderr.take().unwrap();
        let (_, rx) = std::sync::mpsc::channel();
        let live = Live {
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            child,
            stderr_lines: rx,
        };
        (live, stderr)
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stdin.as_mut().unwrap().write_all(bytes).unwrap();
    }

    /// Reads exactly `n` reply bytes; panics if they do not come within `timeout`.
    pub fn read_exact_within(&mut self, n: usize, timeout: std::time::Duration) -> Vec<u8> {
        use std::io::Read;
        use std::os::fd::AsFd;
        let deadline = std::time::Instant::now() + timeout;
        let stdout = self.stdout.as_mut().unwrap();
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let fd = stdout.as_fd();
            let mut fds = [rustix::event::PollFd::new(
                &fd,
                rustix::event::PollFlags::IN,
            )];
            let ts = rustix::event::Timespec::try_from(left).unwrap();
            let ready = rustix::event::poll(&mut fds, Some(&ts)).unwrap_or(0);
            assert!(ready > 0, "no reply within {timeout:?} (got {got:?})");
            let mut buf = vec![0u8; n - got.len()];
            let k = stdout.read(&mut buf).unwrap();
            assert!(k > 0, "stdout closed after {got:?}");
            got.extend_from_slice(&buf[..k]);
        }
        got
    }

    /// True if no reply byte comes within `timeout` (nothing is read).
    pub fn silent_for(&mut self, timeout: std::time::Duration) -> bool {
        use std::os::fd::AsFd;
        let fd = self.stdout.as_ref().unwrap().as_fd();
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        let ts = rustix::event::Timespec::try_from(timeout).unwrap();
        rustix::event::poll(&mut fds, Some(&ts)).unwrap() == 0
    }

    /// Sends one line-protocol query and returns the reply line.
    pub fn ask(&mut self, query: &str) -> String {
        self.send(format!("{query}\n").as_bytes());
        String::from_utf8(self.read_exact_within(2, std::time::Duration::from_secs(10))).unwrap()
    }

    /// Waits for a stderr line containing `needle`; returns every line seen until then.
    pub fn wait_for_log(&self, needle: &str, timeout: std::time::Duration) -> Vec<String> {
        let deadline = std::time::Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    seen.push(line);
                    if hit {
                        return seen;
                    }
                }
                Err(_) => panic!("no log line with {needle:?} within {timeout:?}: {seen:#?}"),
            }
        }
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0);
    }

    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    pub fn close_stdout(&mut self) {
        self.stdout.take();
    }

    /// Waits for the exit; panics after `timeout`. Returns the status and the rest of stderr.
    pub fn wait_within(
        mut self,
        timeout: std::time::Duration,
    ) -> (std::process::ExitStatus, Vec<String>) {
        let deadline = std::time::Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("bridge still running after {timeout:?}");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let mut rest = Vec::new();
        while let Ok(line) = self
            .stderr_lines
            .recv_timeout(std::time::Duration::from_secs(2))
        {
            rest.push(line);
        }
        (status, rest)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
