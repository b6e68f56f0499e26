//! `check`'s line about `remember_accounts`: is every file of remembered accounts also read
//! by a file backend below the backend that fills it, in some chain? Without one, the
//! accounts are written and `isuser` never sees them. And none above it: its *no* to the
//! locked line is final, and every account would be refused from its second login on. What the file itself holds (counts,
//! writable) is the backend's own report (`backend/remember.rs`).

use std::path::Path;

use super::{Finding, Level};
use crate::backend::oauth2::config::IsUserPolicy;
use crate::config::{BackendConfig, Config};

/// The chains of a configuration, as backend names: every route's, or all the backends in
/// file order when there is no route.
fn chains(config: &Config) -> Vec<Vec<&str>> {
    if config.routes.is_empty() {
        return vec![config.backends.iter().map(|b| b.name()).collect()];
    }
    config
        .routes
        .iter()
        .map(|r| r.backends.iter().map(String::as_str).collect())
        .collect()
}

/// The same file, as written or (both existing) as resolved.
fn same_file(a: &Path, b: &Path) -> bool {
    a == b
        || matches!(
            (a.canonicalize(), b.canonicalize()),
            (Ok(x), Ok(y)) if x == y
        )
}

/// One finding for all the backends with `remember_accounts`; `None` when none has it.
pub(super) fn remembered_accounts(config: &Config) -> Option<Finding> {
    let chains = chains(config);
    let file_at = |name: &str| {
        config.backends.iter().find_map(|b| match b {
            BackendConfig::File(f) if f.name == name => Some(f.path.as_path()),
            _ => None,
        })
    };
    let mut served = Vec::new();
    let mut unserved = Vec::new();
    let mut above = Vec::new();
    for backend in &config.backends {
        let Some(path) = backend.remember_accounts() else {
            continue;
        };
        let name = backend.name();
        let over_it = |n: &&&str| file_at(n).is_some_and(|p| same_file(p, path));
        for chain in &chains {
            let Some(at) = chain.iter().position(|n| *n == name) else {
                continue;
            };
            if let Some(file) = chain[..at].iter().find(&over_it) {
                above.push(format!("`{file}` before `{name}`"));
            }
        }
        // `isuser = "allow"`/`"deny"` answers itself: the file below is never asked.
        if let BackendConfig::Oauth2(c) = backend {
            if c.isuser != IsUserPolicy::Next {
                unserved.push(format!(
                    "`{name}` -> {} has isuser = \"{}\", which answers before any file",
                    path.display(),
                    format!("{:?}", c.isuser).to_lowercase()
                ));
                continue;
            }
        }
        // A file backend over the same file after it in a chain that holds it.
        let reader = chains.iter().find_map(|chain| {
            let at = chain.iter().position(|n| *n == name)?;
            chain[at + 1..].iter().find(&over_it)
        });
        match reader {
            Some(file) => served.push(format!("`{name}` -> {} (read by `{file}`)", path.display())),
            None => unserved.push(format!("`{name}` -> {}", path.display())),
        }
    }
    if !above.is_empty() {
        return Some(Finding {
            item: "remember",
            level: Level::Fail,
            detail: format!(
                "{}: a file backend over the remembered accounts answers before the backend \
                 that remembers them, and its no to a locked line is final: every account \
                 would be refused from its second login on; put it after (README: \
                 Remembered accounts)",
                above.join("; ")
            ),
        });
    }
    if !unserved.is_empty() {
        return Some(Finding {
            item: "remember",
            level: Level::Warn,
            detail: format!(
                "{}: isuser never sees the remembered accounts; it needs a file backend over \
                 the file after the backend in a route (`[[backend]] type = \"file\"`), and an \
                 OAuth2 backend's isuser = \"next\" (README: Remembered accounts)",
                unserved.join("; ")
            ),
        });
    }
    (!served.is_empty()).then(|| Finding {
        item: "remember",
        level: Level::Ok,
        detail: format!("remembered accounts: {}", served.join("; ")),
    })
}
