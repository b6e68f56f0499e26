//! The django-oauth-toolkit test IdP (tests/oauth2_server/) as a child process, in the
//! virtualenv named by `EXTAUTH_TEST_IDP_VENV` (scripts/test creates it).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;

/// Runs the test IdP's virtualenv Python with `args`; returns its standard output.
/// Panics, with its standard error, when it fails.
pub fn venv_python<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    let venv = std::env::var("EXTAUTH_TEST_IDP_VENV").expect("EXTAUTH_TEST_IDP_VENV");
    let out = Command::new(Path::new(&venv).join("bin/python"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A running IdP. It exits when its stdin closes, i.e. when this process ends, however it
/// ends, so a shared instance in a `static` needs no cleanup.
pub struct Idp {
    pub base: String,
    _child: Mutex<(Child, ChildStdin)>,
}

impl Idp {
    /// Starts the server with extra `server.py` options, its database in `work` (emptied
    /// first), and waits for its `READY` line. Panics, never skips, without the venv.
    pub fn start_in(work: &Path, options: &[&str]) -> Idp {
        let venv = std::env::var("EXTAUTH_TEST_IDP_VENV").unwrap_or_else(|_| {
            panic!(
                "EXTAUTH_TEST_IDP_VENV is not set: these tests need the django-oauth-toolkit \
                 test IdP. Run scripts/test, or tests/oauth2_server/setup.sh DIR and set \
                 EXTAUTH_TEST_IDP_VENV=DIR"
            )
        });
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let _ = std::fs::remove_dir_all(work);
        std::fs::create_dir_all(work).unwrap();
        let log = std::fs::File::create(work.join("idp.log")).unwrap();
        let mut child = Command::new(root.join("tests/oauth2_server/run.sh"))
            .args([
                venv.as_str(),
                work.to_str().unwrap(),
                "0",
                "--exit-on-stdin-eof",
            ])
            .args(options)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start the test IdP");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("READY ")
            .unwrap_or_else(|| {
                let log = std::fs::read_to_string(work.join("idp.log")).unwrap_or_default();
                panic!("the test IdP did not start ({line:?}): {log}")
            })
            .to_owned();
        let stdin = child.stdin.take().unwrap();
        Idp {
            base,
            _child: Mutex::new((child, stdin)),
        }
    }

    pub fn issuer(&self) -> String {
        format!("{}/o", self.base)
    }

    /// A password grant by bridge-basic for `user`, straight from the IdP: the whole token
    /// response (`access_token`, and `id_token` with `--password-grant-id-token`).
    pub async fn token_response(
        &self,
        http: &reqwest::Client,
        user: &str,
        password: &str,
    ) -> serde_json::Value {
        http.post(format!("{}/token/", self.issuer()))
            .basic_auth("bridge-basic", Some("basic-secret"))
            .form(&[
                ("grant_type", "password"),
                ("username", user),
                ("password", password),
                ("scope", "openid profile"),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}
