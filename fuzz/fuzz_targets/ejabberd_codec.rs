//! The ejabberd codec on arbitrary bytes, fed in arbitrary pieces: one item per complete
//! frame, the same items however the input is split, a truncated last frame dropped at EOF.
#![no_main]

#[path = "common.rs"]
mod common;
#[allow(dead_code)]
#[path = "../../tests/common/oracle.rs"]
mod oracle;

use extauth_bridge::protocol::EjabberdCodec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let decode = |piece| common::decode_in_pieces(EjabberdCodec, input, piece, 2 + 65_535);
    let whole = decode(input.len().max(1));
    let pieces = decode(usize::from(split % 17) + 1);
    assert_eq!(whole.len(), oracle::complete_frames(input));
    assert_eq!(whole, pieces);
});
