//! The `breaker` key that every `[[backend]]` table accepts, whatever its `type`, as plain
//! data: what its keys mean and what they are when unset. The circuit breaker itself is in
//! [`crate::state::breaker`]; this file only describes it, so that the backends' config
//! types (which live next to their backends) can name it without importing the state.

use std::time::Duration;

use serde::Deserialize;

/// `breaker = { failures = 5, open_for = "10s" }` on a `[[backend]]`: off unless set; an
/// empty table (`breaker = {}`) turns it on with the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive *unavailable* results (connect refused or reset, TLS, timeout,
    /// 502/503/504) that open the breaker. A no, a 429 or any other answer resets the count.
    #[serde(default = "default_failures")]
    pub failures: u32,
    /// How long an open breaker answers `Unavailable` at once before letting one probe
    /// through.
    #[serde(
        default = "default_open_for",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub open_for: Duration,
}

pub const DEFAULT_FAILURES: u32 = 5;
pub const DEFAULT_OPEN_FOR: Duration = Duration::from_secs(10);

fn default_failures() -> u32 {
    DEFAULT_FAILURES
}

fn default_open_for() -> Duration {
    DEFAULT_OPEN_FOR
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: DEFAULT_FAILURES,
            open_for: DEFAULT_OPEN_FOR,
        }
    }
}

impl BreakerConfig {
    /// What types alone cannot check: the offending key (relative to `breaker`) and why.
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if self.failures == 0 {
            return Err(("failures", "must be at least 1"));
        }
        if self.open_for.is_zero() {
            return Err(("open_for", "must be greater than zero"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::time::Duration;

    fn parse(breaker: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(
            &format!(
                "[[backend]]\nname = 'a'\ntype = 'file'\npath = '/x'\n\
                 [[backend]]\nname = 'b'\ntype = 'http'\nurl = 'http://127.0.0.1:1'\n{breaker}\n"
            ),
            "b.toml",
        )
    }

    #[test]
    fn off_unless_set_defaults_when_empty_and_on_every_kind() {
        let c = parse("").unwrap();
        assert!(c.backends.iter().all(|b| b.breaker().is_none()));
        let c = parse("breaker = {}").unwrap();
        assert_eq!(
            c.backends[1].breaker(),
            Some(&super::BreakerConfig::default())
        );
        let c = parse("breaker = { failures = 2, open_for = '1m' }").unwrap();
        let b = c.backends[1].breaker().unwrap();
        assert_eq!((b.failures, b.open_for), (2, Duration::from_secs(60)));
        let c = Config::parse(
            "[[backend]]\nname = 'a'\ntype = 'file'\npath = '/x'\nbreaker = { failures = 1 }\n",
            "b.toml",
        )
        .unwrap();
        assert_eq!(c.backends[0].breaker().unwrap().failures, 1);
    }

    #[test]
    fn errors_name_file_and_key() {
        for (text, key) in [
            ("breaker = { failures = 0 }", "backend[1].breaker.failures"),
            (
                "breaker = { open_for = '0s' }",
                "backend[1].breaker.open_for",
            ),
            (
                "breaker = { open_for = 'soon' }",
                "backend[1].breaker.open_for",
            ),
            ("breaker = { failures = -1 }", "backend[1].breaker.failures"),
            ("breaker = { failurs = 3 }", "backend[1].breaker.failurs"),
            ("breaker = 5", "backend[1].breaker"),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.key, key, "{text}: {e}");
            assert!(e.to_string().starts_with("config error in b.toml"), "{e}");
        }
    }
}
