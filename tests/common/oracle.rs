//! How many requests a byte stream holds, counted independently of the codecs. Shared by the
//! property tests and the fuzz targets (`fuzz/fuzz_targets/*.rs` include this file by path).

/// Line protocol: one request per `\n`, plus a non-empty unterminated tail (answered at EOF).
pub fn line_requests(input: &[u8]) -> usize {
    let lines = input.iter().filter(|&&b| b == b'\n').count();
    let tail = input.len() - input.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    lines + usize::from(tail > 0)
}

/// ejabberd protocol: complete length-prefixed frames; a truncated last one does not count.
pub fn complete_frames(mut input: &[u8]) -> usize {
    let mut n = 0;
    while let [hi, lo, rest @ ..] = input {
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        if rest.len() < len {
            break;
        }
        input = &rest[len..];
        n += 1;
    }
    n
}
