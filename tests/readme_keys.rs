//! Every configuration key the code accepts is in README.md's Keys table, every key in the
//! table is accepted by the code, and every default the table gives as a value is the code's.
//!
//! The list of keys is not written down here: it is asked from the configuration types
//! themselves. Every config struct denies unknown fields, and serde's error for an unknown
//! field lists the fields that are expected; an internally tagged enum (`[[backend]] type`)
//! lists its variants for an unknown tag. So the test feeds a probe key at every level —
//! a table, an array of tables, each backend type — and walks what the errors list. A key
//! added to any config struct, in any module, shows up here without touching this file.

use std::collections::BTreeSet;

use serde::Deserialize;
use toml::{Table, Value};

use extauth_bridge::config::Config;

const PROBE: &str = "zzz_probe";

/// Builds the whole configuration document around the value under test.
type Wrap<'a> = &'a dyn Fn(Value) -> Value;

fn table(entries: impl IntoIterator<Item = (String, Value)>) -> Value {
    Value::Table(entries.into_iter().collect::<Table>())
}

fn error_of(doc: Value) -> Option<String> {
    Config::deserialize(doc)
        .err()
        .map(|e| e.message().to_owned())
}

/// The names between backticks after `expected` in a serde error, e.g.
/// "unknown field `zzz`, expected one of `a`, `b`" or "expected `a` or `b`".
fn expected_names(message: &str) -> Vec<String> {
    let Some((_, tail)) = message.split_once("expected") else {
        return Vec::new();
    };
    tail.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// What a position in the document is, found by probing it.
enum Shape {
    /// A table (struct) with these fields.
    Struct(Vec<String>),
    /// A table tagged by `tag`, one struct per variant: (variant, fields).
    Tagged(String, Vec<(String, Vec<String>)>),
    /// Anything else: a value.
    Leaf,
}

fn probe(wrap: Wrap<'_>) -> Shape {
    let probe = || table([(PROBE.to_owned(), Value::Integer(1))]);
    let Some(message) = error_of(wrap(probe())) else {
        return Shape::Leaf;
    };
    if message.contains(&format!("unknown field `{PROBE}`")) {
        return Shape::Struct(expected_names(&message));
    }
    if let Some(tag) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        // An internally tagged enum: an unknown tag lists the variants.
        let unknown = table([(tag.to_owned(), Value::String(PROBE.to_owned()))]);
        let Some(message) = error_of(wrap(unknown)) else {
            return Shape::Leaf;
        };
        if !message.contains("unknown variant") {
            return Shape::Leaf;
        }
        let variants = expected_names(&message)
            .into_iter()
            .map(|variant| {
                let doc = table([
                    (tag.to_owned(), Value::String(variant.clone())),
                    (PROBE.to_owned(), Value::Integer(1)),
                ]);
                let fields = error_of(wrap(doc))
                    .filter(|m| m.contains(&format!("unknown field `{PROBE}`")))
                    .map(|m| expected_names(&m))
                    .unwrap_or_default();
                (variant, fields)
            })
            .collect();
        return Shape::Tagged(tag.to_owned(), variants);
    }
    Shape::Leaf
}

/// Walks the fields of the struct at `prefix`, adding dotted keys to `keys`.
/// `base` builds the document given the struct's own table.
fn walk(prefix: &str, fields: &[String], base: Wrap<'_>, keys: &mut BTreeSet<String>) {
    for field in fields {
        let key = format!("{prefix}{field}");
        let as_table = |inner: Value| base(table([(field.clone(), inner)]));
        let as_array = |inner: Value| base(table([(field.clone(), Value::Array(vec![inner]))]));
        // A table, else an array of tables, else a plain value.
        let (shape, nested, wrap): (Shape, String, Wrap<'_>) = match probe(&as_table) {
            Shape::Leaf => (probe(&as_array), format!("{key}[]."), &as_array),
            shape => (shape, format!("{key}."), &as_table),
        };
        match shape {
            Shape::Leaf => {
                keys.insert(key);
            }
            Shape::Struct(inner) => walk(&nested, &inner, wrap, keys),
            Shape::Tagged(tag, variants) => {
                keys.insert(format!("{nested}{tag}"));
                for (variant, inner) in variants {
                    let tagged = |t: Value| {
                        let mut t = match t {
                            Value::Table(t) => t,
                            other => return wrap(other),
                        };
                        t.insert(tag.clone(), Value::String(variant.clone()));
                        wrap(Value::Table(t))
                    };
                    walk(&nested, &inner, &tagged, keys);
                }
            }
        }
    }
}

fn code_keys() -> BTreeSet<String> {
    let Shape::Struct(top) = probe(&|v| v) else {
        panic!("the top-level config does not deny unknown fields");
    };
    let mut keys = BTreeSet::new();
    walk("", &top, &|v| v, &mut keys);
    keys
}

/// The backticked keys in the first column of the table under `### Keys`.
fn readme_keys() -> BTreeSet<String> {
    readme_rows()
        .into_iter()
        .flat_map(|(names, _)| names)
        .collect()
}

/// The rows of the table under `### Keys` that name keys: (the keys, the default column).
fn readme_rows() -> Vec<(Vec<String>, String)> {
    let readme = include_str!("../README.md");
    let section = readme
        .split("\n### Keys\n")
        .nth(1)
        .expect("README.md has a `### Keys` section");
    let mut rows = Vec::new();
    for line in section.lines().skip_while(|l| !l.starts_with('|')) {
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let first = cells.get(1).copied().unwrap_or("");
        // Key-shaped names only: a row like `backend[].type = "oauth2"` introduces a group.
        let names: Vec<&str> = first
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|k| {
                k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.[]".contains(c))
            })
            .collect();
        if names.is_empty() {
            continue;
        }
        assert!(
            cells.len() >= 4 && !cells[2].is_empty(),
            "README Keys row without a default column: {line}"
        );
        rows.push((
            names.into_iter().map(str::to_owned).collect(),
            cells[2].to_owned(),
        ));
    }
    rows
}

/// A README default that is one literal value (`4s`, `65536`, `false`, `["RS256", …]`), as
/// the TOML value it stands for: TOML syntax if it parses as such, else a string. `None` for
/// the words (`none`, `required`, `discovered`…) that say there is no default value.
fn default_value(cell: &str) -> Option<Value> {
    let text = cell.strip_prefix('`')?.strip_suffix('`')?;
    if text.contains('`') {
        return None;
    }
    let parsed = format!("v = {text}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"));
    Some(parsed.unwrap_or_else(|| Value::String(text.to_owned())))
}

/// A `[[backend]]` of type `kind` with its required fields set to placeholders (found by
/// asking serde which field is missing), so that any other key can be added to it.
fn minimal_backend(kind: &str) -> Table {
    let mut backend = Table::new();
    backend.insert("type".into(), Value::String(kind.into()));
    for _ in 0..8 {
        let doc = table([(
            "backend".to_owned(),
            Value::Array(vec![Value::Table(backend.clone())]),
        )]);
        let Some(message) = error_of(doc) else {
            return backend;
        };
        let field = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
            .unwrap_or_else(|| panic!("backend type {kind}: {message}"));
        backend.insert(field.into(), Value::String("placeholder".into()));
    }
    panic!("backend type {kind}: too many required fields");
}

/// Pairs of documents, one with `key` (dotted, `backend[].x`, `route[].x`) set to `value` and
/// one without it: one pair per backend type that has the key, one pair for other keys.
fn documents_with(key: &str, value: &Value) -> Vec<(Value, Value)> {
    let set = |t: &Table, field: &str| {
        let mut with = t.clone();
        with.insert(field.to_owned(), value.clone());
        (Value::Table(with), Value::Table(t.clone()))
    };
    let wrap = |name: &str, array: bool, (with, without): (Value, Value)| {
        let wrap = |v| match array {
            true => table([(name.to_owned(), Value::Array(vec![v]))]),
            false => table([(name.to_owned(), v)]),
        };
        (wrap(with), wrap(without))
    };
    if let Some(field) = key.strip_prefix("backend[].") {
        // A key of an inline table in a backend (`breaker.failures`): compared with that
        // table set but empty, which is what gives the table's own defaults.
        let set = |t: &Table, field: &str| match field.split_once('.') {
            Some((outer, inner)) => {
                let (mut with, mut without) = (t.clone(), t.clone());
                with.insert(outer.into(), table([(inner.into(), value.clone())]));
                without.insert(outer.into(), Value::Table(Table::new()));
                (Value::Table(with), Value::Table(without))
            }
            None => set(t, field),
        };
        return ["file", "http", "oauth2"]
            .into_iter()
            .map(|kind| wrap("backend", true, set(&minimal_backend(kind), field)))
            .filter(|(with, _)| {
                !error_of(with.clone()).is_some_and(|m| m.contains("unknown field"))
            })
            .collect();
    }
    if let Some(field) = key.strip_prefix("route[].") {
        let mut route = Table::new();
        route.insert("domains".into(), Value::Array(vec!["example.net".into()]));
        route.insert("backends".into(), Value::Array(vec!["local".into()]));
        return vec![wrap("route", true, set(&route, field))];
    }
    match key.split_once('.') {
        Some((outer, field)) => vec![wrap(outer, false, set(&Table::new(), field))],
        None => vec![set(&Table::new(), key)],
    }
}

/// Whether setting `key` to `value` gives a configuration other than leaving it out, i.e.
/// whether `value` is not the code's default. Compared through `Debug`, which shows every
/// field; an error if the code does not accept `value` at all.
fn differs_from_default(key: &str, value: &Value) -> Result<bool, String> {
    let pairs = documents_with(key, value);
    if pairs.is_empty() {
        return Err(format!("no backend type has `{key}`"));
    }
    let mut differs = false;
    for (with, without) in pairs {
        let parse = |doc: Value| {
            Config::deserialize(doc)
                .map(|c| format!("{c:?}"))
                .map_err(|e| format!("`{key}` = {value:?}: {}", e.message()))
        };
        differs |= parse(with)? != parse(without)?;
    }
    Ok(differs)
}

#[test]
fn probing_finds_the_core_keys() {
    // Guards the probing itself: if serde's messages changed, this fails loudly instead of
    // the main test passing on an empty list.
    let keys = code_keys();
    for k in [
        "timeout",
        "log.level",
        "backend[].type",
        "backend[].name",
        "backend[].path",
        "route[].domains",
        "route[].on_unavailable",
        "metrics_file",
    ] {
        assert!(keys.contains(k), "{k} not found; found {keys:?}");
    }
}

#[test]
fn every_config_key_is_in_the_readme_and_every_readme_key_exists() {
    let code = code_keys();
    let readme = readme_keys();
    let undocumented: Vec<_> = code.difference(&readme).collect();
    let unknown: Vec<_> = readme.difference(&code).collect();
    assert!(
        undocumented.is_empty(),
        "config keys missing from README.md's Keys table (add a row `| \\`key\\` | default | meaning |`; \
         array tables are written backend[].key, nested tables a.b): {undocumented:?}"
    );
    assert!(
        unknown.is_empty(),
        "README.md's Keys table lists keys the code does not accept: {unknown:?} (renamed or \
         removed? or the struct holding them lacks #[serde(deny_unknown_fields)], which the \
         project requires and this test relies on)"
    );
}

#[test]
fn every_default_in_the_readme_is_the_codes() {
    // Guards the comparison itself: a wrong default is noticed.
    assert_eq!(differs_from_default("timeout", &"5s".into()), Ok(true));
    assert_eq!(
        differs_from_default("backend[].max_body", &Value::Integer(1024)),
        Ok(true)
    );
    let mut compared = BTreeSet::new();
    let mut wrong = Vec::new();
    for (names, cell) in readme_rows() {
        let Some(value) = default_value(&cell) else {
            continue;
        };
        for key in names {
            match differs_from_default(&key, &value) {
                Ok(false) => {}
                Ok(true) => wrong.push(format!("`{key}`: README says {cell}, the code differs")),
                Err(e) => wrong.push(e),
            }
            compared.insert(key);
        }
    }
    assert!(
        wrong.is_empty(),
        "README.md's Keys table gives defaults the code does not have: {wrong:#?}"
    );
    for k in [
        "timeout",
        "max_line",
        "log.level",
        "cache.ttl",
        "backend[].request_timeout",
        "backend[].algorithms",
        "backend[].breaker.open_for",
        "route[].on_unavailable",
        "metrics_summary_interval",
    ] {
        assert!(
            compared.contains(k),
            "{k} not compared; compared {compared:?}"
        );
    }
}
