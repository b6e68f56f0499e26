//! A private `redis-server` for the shared-store tests: loopback, a password, no
//! persistence, optionally TLS; stopped by its pid when dropped. Debian's `redis-server`
//! package (7.0, built with TLS) is what `scripts/test` installs.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PASSWORD: &str = "test-store-password";

/// The test CA's and the server's PEM files, in `dir`.
pub struct Tls {
    pub ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Tls {
    /// A CA and a certificate for 127.0.0.1 and localhost signed by it.
    pub fn generate(dir: &Path) -> Tls {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "extauth-bridge store test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let tls = Tls {
            ca: dir.join("store-ca.pem"),
            cert: dir.join("store-cert.pem"),
            key: dir.join("store-key.pem"),
        };
        std::fs::write(&tls.ca, ca_cert.pem()).unwrap();
        std::fs::write(&tls.cert, leaf.pem()).unwrap();
        std::fs::write(&tls.key, leaf_key.serialize_pem()).unwrap();
        tls
    }
}

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    tls: bool,
    dir: PathBuf,
}

/// A loopback port nobody listens on (yet).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    pub fn start(dir: &Path) -> RedisServer {
        RedisServer::start_on(dir, free_port(), None)
    }

    /// On `port`, plain, or TLS-only with `tls`.
    pub fn start_on(dir: &Path, port: u16, tls: Option<&Tls>) -> RedisServer {
        let mut args: Vec<String> = vec![
            "--bind".into(),
            "127.0.0.1".into(),
            "--requirepass".into(),
            PASSWORD.into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            dir.display().to_string(),
            // DEBUG SLEEP is how the slow-store test makes it slow.
            "--enable-debug-command".into(),
            "local".into(),
            // Always on a Unix socket too, for `redis+unix://`.
            "--unixsocket".into(),
            dir.join("redis.sock").display().to_string(),
            "--unixsocketperm".into(),
            "700".into(),
        ];
        match tls {
            Some(t) => args.extend([
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                t.cert.display().to_string(),
                "--tls-key-file".into(),
                t.key.display().to_string(),
                "--tls-ca-cert-file".into(),
                t.ca.display().to_string(),
                "--tls-auth-clients".into(),
                "no".into(),
            ]),
            None => args.extend(["--port".into(), port.to_string()]),
        }
        let child = Command::new("redis-server")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        let server = RedisServer {
            port,
            child: Some(child),
            tls: tls.is_some(),
            dir: dir.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// The `redis+unix://` URL of its Unix socket.
    pub fn unix_url(&self) -> String {
        format!(
            "redis+unix://{}?db=0",
            self.dir.join("redis.sock").display()
        )
    }

    /// `redis-cli` against this server (plain only); its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .env("REDISCLI_AUTH", PASSWORD)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// SIGKILL, as a crash would; the port is free again afterwards.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
        }
    }

    /// A new server on the same port (after [`RedisServer::kill`]): an empty store.
    pub fn restart(&mut self) {
        self.kill();
        let again = RedisServer::start_on(&self.dir, self.port, None);
        *self = again;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
