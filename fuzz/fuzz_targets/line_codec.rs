//! The line codec on arbitrary bytes, fed in arbitrary pieces. Checks what the request loop
//! relies on: exactly one item per `\n`-terminated line plus one for a non-empty unterminated
//! tail at EOF, the same items however the input is split, and a bounded buffer.
#![no_main]

#[path = "common.rs"]
mod common;
#[allow(dead_code)]
#[path = "../../tests/common/oracle.rs"]
mod oracle;

use extauth_bridge::protocol::LineCodec;
use libfuzzer_sys::fuzz_target;

const MAX_LINE: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let decode =
        |piece| common::decode_in_pieces(LineCodec::new(MAX_LINE), input, piece, MAX_LINE + 1);
    let whole = decode(input.len().max(1));
    let pieces = decode(usize::from(split % 17) + 1);
    assert_eq!(whole.len(), oracle::line_requests(input));
    assert_eq!(whole, pieces);
});
