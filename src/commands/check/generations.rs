//! `check`'s line about pool-wide invalidation: where the generations file is and whether
//! it can be used, and a warning where a password can change through the bridge but the
//! processes of a pool would not see each other's changes.
//!
//! It only looks: the file is opened when it exists and never created (`check` is often run
//! as root or as an admin, and the daemon's account must own the file).

use crate::config::{BackendConfig, Config};
use crate::state::generation_file::{self, location};

use super::findings::writable;
use super::{Finding, Level};

pub(super) fn generations(config: &Config) -> Option<Finding> {
    let finding = |level, detail| {
        Some(Finding {
            item: "generations",
            level,
            detail,
        })
    };
    let Some(at) = location(config) else {
        if !config.cache.enabled && !config.throttle.enabled {
            return None;
        }
        // An HTTP API can change passwords (setpass, removeuser); an IdP cannot.
        let changing: Vec<&str> = config
            .backends
            .iter()
            .filter(|b| matches!(b, BackendConfig::Http(_)))
            .map(|b| b.name())
            .collect();
        if changing.is_empty() {
            return finding(
                Level::Ok,
                "in each process's memory (no state_dir, no users file; nothing here changes a \
                 password)"
                    .into(),
            );
        }
        return finding(
            Level::Warn,
            format!(
                "the cache is on and `{}` can change passwords, but no state_dir is set: a \
                 password changed through one bridge process is served from the others' \
                 caches for up to cache.ttl; set state_dir to a directory every process of \
                 the pool can write",
                changing.join("`, `")
            ),
        );
    };
    let path = at.path();
    let from = format!("(from `{}`)", at.key);
    if !path.exists() && std::fs::symlink_metadata(&path).is_err() {
        return if at.dir.is_dir() && writable(&path) {
            finding(
                Level::Ok,
                format!(
                    "{} {from}: not created yet; the first bridge process creates it",
                    path.display()
                ),
            )
        } else {
            finding(
                Level::Fail,
                format!(
                    "{} {from}: cannot be created (directory missing or not writable as this \
                     user): the bridge will not start",
                    path.display()
                ),
            )
        };
    }
    match generation_file::open(&at.dir, false) {
        Ok(_) => finding(
            Level::Ok,
            format!(
                "{} {from}: shared by every bridge process of the machine",
                path.display()
            ),
        ),
        Err(e) => finding(
            Level::Fail,
            format!("{e} {from}: the bridge will not start"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text, "t.toml").unwrap()
    }

    const API: &str =
        "[[backend]]\nname = \"api\"\ntype = \"http\"\nurl = \"http://127.0.0.1:1\"\n";

    #[test]
    fn warns_only_for_a_cached_api_without_a_shared_directory() {
        let f = generations(&config(&format!("[cache]\nenabled = true\n{API}"))).unwrap();
        assert_eq!(f.level, Level::Warn, "{}", f.detail);
        assert!(f.detail.contains("`api`") && f.detail.contains("state_dir"));
        assert!(generations(&config(API)).is_none());

        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "state_dir = {:?}\n[cache]\nenabled = true\n{API}",
            dir.path()
        );
        let f = generations(&config(&text)).unwrap();
        assert_eq!(f.level, Level::Ok, "{}", f.detail);
        assert!(f.detail.contains("not created yet"), "{}", f.detail);
        assert!(!dir.path().join(generation_file::FILE_NAME).exists());

        crate::state::generation::Generations::shared(dir.path()).unwrap();
        let f = generations(&config(&text)).unwrap();
        assert_eq!(f.level, Level::Ok, "{}", f.detail);
        assert!(f.detail.contains("shared by every"), "{}", f.detail);

        std::fs::write(dir.path().join(generation_file::FILE_NAME), b"x").unwrap();
        let f = generations(&config(&text)).unwrap();
        assert_eq!(f.level, Level::Fail, "{}", f.detail);
        assert!(f.detail.contains("state_dir"), "{}", f.detail);
    }
}
