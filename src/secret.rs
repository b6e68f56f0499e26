//! A string that must never be seen: passwords, tokens, client secrets, HTTP credentials.
//!
//! `Debug` and `Display` print a fixed placeholder, the bytes are wiped when the value is
//! dropped, and there is deliberately no `Serialize`: the only way to the text is
//! [`Secret::expose`], which makes every place that handles a secret easy to find.

use std::fmt;

use zeroize::Zeroizing;

/// What `Debug`/`Display` print instead of the secret.
pub const REDACTED: &str = "<redacted>";

#[derive(Clone, Default)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(Zeroizing::new(value.into()))
    }

    /// The secret itself. Call it only where the value leaves for its one legitimate use
    /// (hash verification, an outgoing request), never to format a message.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret::new(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

/// Reads a secret that the configuration gives inline, in a file, or in an environment
/// variable: at most one of the three keys `[inline, file, env]` may be set. A file's
/// trailing newline is dropped (`echo secret > file` is how people write them). Errors name
/// the key at fault, and never the secret.
pub fn resolve(
    keys: [&'static str; 3],
    inline: Option<&Secret>,
    file: Option<&std::path::Path>,
    env: Option<&str>,
) -> Result<Option<Secret>, (&'static str, String)> {
    let [inline_key, file_key, env_key] = keys;
    let given = [inline.is_some(), file.is_some(), env.is_some()];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err((
            inline_key,
            format!("give only one of {inline_key}, {file_key}, {env_key}"),
        ));
    }
    if let Some(s) = inline {
        return Ok(Some(s.clone()));
    }
    if let Some(path) = file {
        let text = Secret::new(
            std::fs::read_to_string(path)
                .map_err(|e| (file_key, format!("cannot read {}: {e}", path.display())))?,
        );
        return Ok(Some(Secret::new(
            text.expose().trim_end_matches(['\r', '\n']),
        )));
    }
    if let Some(var) = env {
        return std::env::var(var)
            .map(|v| Some(Secret::new(v)))
            .map_err(|_| {
                (
                    env_key,
                    format!("environment variable {var} is not set (or not UTF-8)"),
                )
            });
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), REDACTED);
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{:?}", Some(&s)).contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn resolve_reads_one_source_and_names_the_key() {
        const KEYS: [&str; 3] = ["pw", "pw_file", "pw_env"];
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s");
        std::fs::write(&file, "from-file\n").unwrap();
        let got = resolve(KEYS, None, Some(&file), None).unwrap().unwrap();
        assert_eq!(got.expose(), "from-file");
        let inline = Secret::new("x");
        let err = resolve(KEYS, Some(&inline), Some(&file), None).unwrap_err();
        assert_eq!(err.0, "pw");
        let err = resolve(KEYS, None, Some(&dir.path().join("none")), None).unwrap_err();
        assert_eq!(err.0, "pw_file");
        let err = resolve(KEYS, None, None, Some("EXTAUTH_TEST_SURELY_UNSET")).unwrap_err();
        assert_eq!(err.0, "pw_env");
        assert!(resolve(KEYS, None, None, None).unwrap().is_none());
    }
}
