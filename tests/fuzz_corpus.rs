//! Replays the committed fuzz corpora (fuzz/corpus/TARGET) through the fuzz targets' own
//! properties (fuzz/fuzz_targets/common.rs), so that plain `cargo test` on stable, which cannot
//! run libFuzzer, still catches a regression on any input the fuzzer once found interesting.

#[path = "../fuzz/fuzz_targets/common.rs"]
mod fuzz_common;
#[path = "common/oracle.rs"]
mod oracle;

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// The corpus files of one target, sorted. Hidden files are skipped: they are libFuzzer's or
/// an editor's, not inputs, and .gitignore keeps them out of the repository anyway.
fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("read_dir entry").path())
        .filter(|path| path.is_file())
        .filter(|path| {
            !path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    // An empty (or mistakenly deleted) corpus would make the replay pass vacuously.
    assert!(!files.is_empty(), "{} holds no corpus files", dir.display());
    files
}

/// Runs `property` on every corpus file of `target`. A failing file does not stop the replay:
/// every file that violates the property is named in the final assertion, so one run shows
/// the whole damage.
fn replay(target: &str, property: fn(&[u8])) {
    let mut failures = Vec::new();
    for path in corpus(target) {
        let data =
            std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        // AssertUnwindSafe: nothing the property touches outlives a panic but `data`,
        // which it only reads.
        if let Err(panic) = panic::catch_unwind(AssertUnwindSafe(|| property(&data))) {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(non-string panic)");
            failures.push(format!("{}: {message}", path.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} corpus file(s) of {target} violate its property:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn line_codec_corpus_holds() {
    replay("line_codec", fuzz_common::line_codec);
}

#[test]
fn ejabberd_codec_corpus_holds() {
    replay("ejabberd_codec", fuzz_common::ejabberd_codec);
}

#[test]
fn request_parse_corpus_holds() {
    replay("request_parse", fuzz_common::request_parse);
}

#[test]
fn oauth2_json_corpus_holds() {
    replay("oauth2_json", fuzz_common::oauth2_json);
}

#[test]
fn users_file_corpus_holds() {
    replay("users_file", fuzz_common::users_file);
}

#[test]
fn protocol_detect_corpus_holds() {
    replay("protocol_detect", fuzz_common::protocol_detect);
}
