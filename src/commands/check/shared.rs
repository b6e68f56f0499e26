//! `check`'s lines about `[shared]`: the shared key file (readable, well-formed, not
//! readable by others) and the store (connects, authenticates, writes, reads and deletes a
//! probe key, and the round trip). Must not write anything but the probe key, which
//! expires by itself in 10 s if the delete is lost.

use std::os::unix::fs::PermissionsExt;

use super::{Finding, Level};
use crate::config::{Config, SharedConfig};
use crate::setup::build_shared;
use crate::state::shared::SharedError;

pub(super) fn shared(config: &Config, source: &str) -> Vec<Finding> {
    let Some(shared) = &config.shared else {
        return Vec::new();
    };
    let mut findings = vec![key_file(shared)];
    let mut what = vec!["invalidation of changed accounts"];
    if config.cache.enabled {
        what.push("the credential cache");
    }
    if config.throttle.enabled {
        what.push("the throttle");
    }
    findings.push(Finding {
        item: "shared",
        level: Level::Ok,
        detail: format!(
            "shared through the store: {}; prefix {:?}, {} per operation",
            what.join(", "),
            shared.key_prefix,
            humantime::format_duration(shared.timeout)
        ),
    });
    findings.push(store(shared, source));
    findings
}

fn key_file(shared: &SharedConfig) -> Finding {
    let path = shared.key_file.display();
    let (level, detail) = match std::fs::metadata(&shared.key_file) {
        Err(e) => (Level::Fail, format!("key_file {path}: {e}")),
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o004 != 0 {
                (
                    Level::Fail,
                    format!("key_file {path}: mode {mode:04o}, world-readable; chmod 600 (or 640 with the XMPP server's group)"),
                )
            } else {
                (Level::Ok, format!("key_file {path}: mode {mode:04o}"))
            }
        }
    };
    Finding {
        item: "shared",
        level,
        detail,
    }
}

fn store(shared: &SharedConfig, source: &str) -> Finding {
    let (level, detail) = match probe(shared, source) {
        Ok(took) => (
            Level::Ok,
            format!(
                "store {}: probe key written, read and deleted, round trip {:.1} ms",
                shared.url,
                super::millis(took)
            ),
        ),
        Err(why) => (Level::Fail, format!("store {}: {why}", shared.url)),
    };
    Finding {
        item: "shared",
        level,
        detail,
    }
}

fn probe(shared: &SharedConfig, source: &str) -> Result<std::time::Duration, String> {
    let (_, store) = build_shared(shared, source).map_err(|e| e.to_string())?;
    let runtime = crate::commands::runtime().map_err(|e| e.to_string())?;
    // The first connect (TCP, TLS, AUTH) runs in the background and may take longer than
    // one operation's timeout: probe until it is done (at most ~3 s), then report the
    // round trip of a probe on the live connection.
    let result = runtime.block_on(async {
        let mut last = store.probe().await;
        for _ in 0..30 {
            match &last {
                Err(SharedError::Timeout | SharedError::Down) => {}
                Err(_) => break,
                Ok(_) => return store.probe().await,
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            last = store.probe().await;
        }
        last
    });
    runtime.shutdown_background();
    result.map_err(|e| e.to_string())
}
