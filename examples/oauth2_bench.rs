//! Logins per second through the bridge, one request in flight, in each OAuth2 mode against
//! the django-oauth-toolkit test IdP, next to the IdP's own ceiling: the same HTTP calls
//! made directly from a keep-alive reqwest client, also one at a time.
//!
//! ```sh
//! scripts/test                      # once: creates target/idp-venv
//! cargo build --release
//! EXTAUTH_TEST_IDP_VENV=target/idp-venv cargo run --release --example oauth2_bench [-- N]
//! ```
//!
//! The bridge binary is `target/release/extauth-bridge` (or `$EXTAUTH_BRIDGE_BIN`).

#[path = "../tests/oauth2_common/mod.rs"]
mod oauth2_common;

use std::time::{Duration, Instant};

use oauth2_common::idp::Idp;
use oauth2_common::{write_config, Bridge, Wire};

const USER: &str = "romeo";
const PASSWORD: &str = "iheartjuliet";

struct Direct<'a> {
    http: reqwest::Client,
    idp: &'a Idp,
    issuer: String,
}

impl Direct<'_> {
    async fn token_response(&self) -> serde_json::Value {
        self.idp.token_response(&self.http, USER, PASSWORD).await
    }

    async fn grant(&self) -> String {
        let r = self.token_response().await;
        r["access_token"].as_str().unwrap().to_owned()
    }

    async fn userinfo(&self, token: &str) {
        let r: serde_json::Value = self
            .http
            .get(format!("{}/userinfo/", self.issuer))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["preferred_username"], USER);
    }

    async fn introspect(&self, token: &str) {
        let r: serde_json::Value = self
            .http
            .post(format!("{}/introspect/", self.issuer))
            .basic_auth("bridge-basic", Some("basic-secret"))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["active"], true);
    }
}

fn rate(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("N"))
        .unwrap_or(300);
    let bin = std::env::var("EXTAUTH_BRIDGE_BIN").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/extauth-bridge").into()
    });
    let work = tempfile::tempdir().unwrap();
    let idp = Idp::start_in(&work.path().join("idp"), &["--password-grant-id-token"]);
    let issuer = idp.issuer();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let direct = Direct {
        http: reqwest::Client::new(),
        idp: &idp,
        issuer: issuer.clone(),
    };
    let token = rt.block_on(direct.grant());
    let id_token = rt.block_on(direct.token_response())["id_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let client = "client_id = \"bridge-basic\"\nclient_secret = \"basic-secret\"\nscope = \"openid profile\"\n";
    let modes: Vec<(&str, String, &str)> = vec![
        (
            "password_grant + userinfo",
            format!("{client}verify = \"userinfo\""),
            PASSWORD,
        ),
        (
            "password_grant + introspection",
            format!("{client}verify = \"introspection\""),
            PASSWORD,
        ),
        (
            "password_grant, verify none",
            format!("{client}verify = \"none\""),
            PASSWORD,
        ),
        (
            "token via introspection",
            format!("{client}mode = \"token\"\nvalidate = \"introspection\""),
            &token,
        ),
        (
            "token via userinfo",
            "mode = \"token\"\nvalidate = \"userinfo\"".into(),
            &token,
        ),
        (
            "token as JWT (local)",
            "mode = \"token\"\nvalidate = \"jwt\"\naudience = \"bridge-basic\"".into(),
            &id_token,
        ),
    ];
    println!("{n} logins each, one in flight; bridge: {bin}");
    println!("{:<34} {:>12} {:>16}", "mode", "bridge /s", "IdP direct /s");
    for (i, (name, extra, password)) in modes.iter().enumerate() {
        let config = write_config(
            work.path(),
            &format!(
                "[[backend]]\nname = \"dot\"\ntype = \"oauth2\"\nissuer = \"{issuer}\"\n{extra}\n"
            ),
        );
        let mut bridge = Bridge::start_bin(&bin, &config, Wire::Line, &["--log-level", "warn"]);
        let request = format!("auth:{USER}:example.net:{password}");
        for _ in 0..10 {
            assert!(bridge.ask(&request), "{name}: warm-up login refused");
        }
        let start = Instant::now();
        for _ in 0..n {
            assert!(bridge.ask(&request), "{name}: login refused");
        }
        let through_bridge = rate(n, start.elapsed());
        bridge.finish();

        let ceiling = rt.block_on(async {
            let start = Instant::now();
            for _ in 0..n {
                match i {
                    0 => direct.userinfo(&direct.grant().await).await,
                    1 => direct.introspect(&direct.grant().await).await,
                    2 => {
                        direct.grant().await;
                    }
                    3 => direct.introspect(&token).await,
                    4 => direct.userinfo(&token).await,
                    _ => return None,
                }
            }
            Some(rate(n, start.elapsed()))
        });
        let ceiling = ceiling.map_or("(no IdP call)".to_owned(), |c| format!("{c:.0}"));
        println!("{name:<34} {through_bridge:>12.0} {ceiling:>16}");
    }
}
