//! Load driver for the HTTP backend: requests per second through the bridge (ejabberd
//! framing, one request in flight, as one ejabberd pool process sends them) against a
//! mod_auth_http API, next to the same API driven by a plain keep-alive HTTP client loop.
//!
//! ```sh
//! cargo build --release --bin extauth-bridge --example http_auth_server --example http_load
//! target/release/examples/http_auth_server --listen 127.0.0.1:8080 \
//!     --user romeo@example.net:iheartjuliet &
//! target/release/examples/http_load --bridge target/release/extauth-bridge \
//!     --url http://127.0.0.1:8080 --account romeo@example.net:iheartjuliet --requests 20000
//! ```

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// The bridge binary
    #[arg(long, default_value = "target/release/extauth-bridge")]
    bridge: PathBuf,
    /// The API's base URL
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An account the API knows, `user@domain:password`
    #[arg(long, default_value = "romeo@example.net:iheartjuliet")]
    account: String,
    /// Requests per round
    #[arg(long, default_value_t = 5_000)]
    requests: u32,
    /// Rounds, alternating the two measurements; the best and the median round are shown,
    /// since on a shared machine other work only ever makes a round slower
    #[arg(long, default_value_t = 7)]
    rounds: usize,
}

fn per_second(n: u32, took: Duration) -> f64 {
    f64::from(n) / took.as_secs_f64()
}

/// The API alone: one reqwest client, keep-alive, one request at a time.
fn plain_client(args: &Args, user: &str, server: &str, pass: &str) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .tls_built_in_native_certs(false)
            .build()
            .expect("client");
        let url = format!("{}/check_password", args.url);
        let query = [("user", user), ("server", server), ("pass", pass)];
        let ask = || async {
            let r = client
                .get(&url)
                .query(&query)
                .send()
                .await
                .expect("request");
            assert_eq!(r.text().await.expect("body").trim(), "true");
        };
        ask().await; // connect outside the measurement
        let start = Instant::now();
        for _ in 0..args.requests {
            ask().await;
        }
        per_second(args.requests, start.elapsed())
    })
}

/// The bridge, spawned as ejabberd does, asked `auth` with one request in flight.
fn through_bridge(args: &Args, user: &str, server: &str, pass: &str) -> f64 {
    let mut child = Command::new(&args.bridge)
        .args(["--http-url", &args.url, "--protocol", "ejabberd"])
        .args(["--log-target", "none"])
        .env_remove("EXTAUTH_BRIDGE_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the bridge");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = child.stdout.take().expect("stdout");
    let payload = format!("auth:{user}:{server}:{pass}");
    let mut frame = u16::try_from(payload.len())
        .expect("short request")
        .to_be_bytes()
        .to_vec();
    frame.extend_from_slice(payload.as_bytes());
    let mut ask = || {
        stdin.write_all(&frame).expect("write");
        let mut reply = [0u8; 4];
        stdout.read_exact(&mut reply).expect("read");
        assert_eq!(reply, [0, 2, 0, 1], "the bridge said no");
    };
    ask(); // start-up and connect outside the measurement
    let start = Instant::now();
    for _ in 0..args.requests {
        ask();
    }
    let rate = per_second(args.requests, start.elapsed());
    drop(stdin);
    let _ = child.wait();
    rate
}

/// What building the HTTP client costs, with and without the system's root certificates.
fn client_build_cost() -> (Duration, Duration) {
    let time = |native: bool| {
        let start = Instant::now();
        let _client = reqwest::Client::builder()
            .tls_built_in_native_certs(native)
            .build()
            .expect("client");
        start.elapsed()
    };
    (time(true), time(false))
}

fn main() {
    let args = Args::parse();
    let (jid, pass) = args
        .account
        .split_once(':')
        .expect("--account user@domain:password");
    let (user, server) = jid
        .rsplit_once('@')
        .expect("--account user@domain:password");
    let (with_roots, without_roots) = client_build_cost();
    println!("client build: {with_roots:?} with native roots, {without_roots:?} without");
    let mut plain = Vec::new();
    let mut bridged = Vec::new();
    for _ in 0..args.rounds.max(1) {
        plain.push(plain_client(&args, user, server, pass));
        bridged.push(through_bridge(&args, user, server, pass));
    }
    let (plain_best, plain_median) = best_and_median(&mut plain);
    let (bridged_best, bridged_median) = best_and_median(&mut bridged);
    println!("requests/s, one in flight: best round / median round");
    println!("plain keep-alive client: {plain_best:.0} / {plain_median:.0}");
    println!("through the bridge:      {bridged_best:.0} / {bridged_median:.0}");
    println!(
        "ratio bridge/plain:      {:.2} / {:.2}",
        bridged_best / plain_best,
        bridged_median / plain_median
    );
}

fn best_and_median(rates: &mut [f64]) -> (f64, f64) {
    rates.sort_by(f64::total_cmp);
    (rates[rates.len() - 1], rates[rates.len() / 2])
}
