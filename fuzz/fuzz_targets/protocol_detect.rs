//! Auto-detection plus decoding on arbitrary bytes, fed in arbitrary pieces. The property itself
//! is `common::protocol_detect`, shared with tests/fuzz_corpus.rs, which replays the committed
//! corpus on stable.
#![no_main]

// Each target uses one of the shared properties; the others are dead code here.
#[allow(dead_code)]
#[path = "common.rs"]
mod common;
#[allow(dead_code)]
#[path = "../../tests/common/oracle.rs"]
mod oracle;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| common::protocol_detect(data));
