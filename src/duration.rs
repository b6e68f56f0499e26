//! Durations in the configuration (`4s`, `500ms`, `1m 30s`), for every config type: the
//! top-level one and the backends' own. A module of its own so that the backends' config
//! types need nothing from `config`, which names them: the data flows one way.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Parses durations such as `4s`, `500ms`, `1m 30s`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))
}
