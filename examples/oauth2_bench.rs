//! Logins per second through the bridge, one request in flight, in each OAuth2 mode against
//! the django-oauth-toolkit test IdP, next to the IdP's own ceiling: the same HTTP calls
//! made directly (examples/oauth2_ceiling.py, one keep-alive connection), also one at a time.
//! Bridge and direct batches alternate in rounds, because the machine may be busy.
//!
//! ```sh
//! scripts/test                      # once: creates target/idp-venv
//! cargo build --release             # the bridge being measured
//! EXTAUTH_TEST_IDP_VENV=target/idp-venv cargo run --example oauth2_bench [-- N]
//! ```
//!
//! The driver itself may be a debug build: it only writes a line and reads the reply.
//!
//! The bridge binary is `target/release/extauth-bridge` (or `$EXTAUTH_BRIDGE_BIN`).

#[path = "../tests/oauth2_common/mod.rs"]
mod oauth2_common;

use std::time::{Duration, Instant};

use oauth2_common::idp::{venv_python, Idp};
use oauth2_common::{write_config, Bridge, Wire};

const USER: &str = "romeo";
const PASSWORD: &str = "iheartjuliet";

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
    let grant = rt.block_on(idp.token_response(&reqwest::Client::new(), USER, PASSWORD));
    let token = grant["access_token"].as_str().unwrap().to_owned();
    let id_token = grant["id_token"].as_str().unwrap().to_owned();

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
            format!("{client}mode = \"token\"\nvalidate = \"introspection\"\naudience = \"bridge-basic\""),
            &token,
        ),
        (
            "token via userinfo",
            "mode = \"token\"\nvalidate = \"userinfo\"\naudience = \"any\"".into(),
            &token,
        ),
        (
            "token as JWT (local)",
            "mode = \"token\"\nvalidate = \"jwt\"\naudience = \"bridge-basic\"".into(),
            &id_token,
        ),
    ];
    let ceiling_calls = [
        "grant+userinfo",
        "grant+introspect",
        "grant",
        "introspect",
        "userinfo",
    ];
    // The machine is shared and noisy: bridge and direct batches alternate, and the median
    // of the rounds is reported with the best round.
    const ROUNDS: usize = 5;
    let batch = n.div_ceil(ROUNDS);
    println!("{ROUNDS} rounds of {batch} logins per mode, one in flight; bridge: {bin}");
    println!(
        "{:<32} {:>22} {:>22}",
        "mode", "bridge /s median (best)", "IdP direct /s median (best)"
    );
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
        let (mut through_bridge, mut ceiling) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let start = Instant::now();
            for _ in 0..batch {
                assert!(bridge.ask(&request), "{name}: login refused");
            }
            through_bridge.push(rate(batch, start.elapsed()));
            if i == 5 {
                continue; // local JWT validation: no IdP call to compare with
            }
            ceiling.push(python_ceiling(&issuer, ceiling_calls[i], batch, &token));
        }
        bridge.finish();
        println!(
            "{name:<32} {:>22} {:>22}",
            summary(&mut through_bridge),
            summary(&mut ceiling)
        );
    }
}

/// The IdP's own rate for the same HTTP calls, from a stdlib Python client over one
/// keep-alive connection (an optimised client: the example itself is usually built without
/// optimisation, which would understate the IdP).
fn python_ceiling(issuer: &str, calls: &str, n: usize, token: &str) -> f64 {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/oauth2_ceiling.py");
    venv_python(&[script, issuer, calls, &n.to_string(), token])
        .trim()
        .parse()
        .unwrap()
}

/// `median (best)` of per-round rates.
fn summary(rates: &mut [f64]) -> String {
    if rates.is_empty() {
        return "(no IdP call)".to_owned();
    }
    rates.sort_by(f64::total_cmp);
    format!(
        "{:.0} ({:.0})",
        rates[rates.len() / 2],
        rates[rates.len() - 1]
    )
}
