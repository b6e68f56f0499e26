//! The floor of the pipe path: answers every ejabberd frame with `00 02 00 01` and does
//! nothing else. The load driver measures it in the same run as the bridge, so the bridge's
//! figures are ratios to what two processes and two pipes cost on this machine.
//!
//! Raw `read(2)`/`write(2)` on fd 0/1, one write per batch of complete frames, like the bridge.

fn main() {
    let mut buf = vec![0u8; 64 * 1024];
    let mut have = 0usize;
    let mut replies: Vec<u8> = Vec::with_capacity(4096);
    loop {
        // SAFETY: reading into the spare part of our own buffer.
        let n = unsafe { libc::read(0, buf[have..].as_mut_ptr().cast(), buf.len() - have) };
        if n <= 0 {
            return;
        }
        have += n as usize;
        let mut at = 0;
        while have - at >= 2 {
            let len = u16::from_be_bytes([buf[at], buf[at + 1]]) as usize;
            if have - at < 2 + len {
                break;
            }
            at += 2 + len;
            replies.extend_from_slice(&[0, 2, 0, 1]);
        }
        buf.copy_within(at..have, 0);
        have -= at;
        let mut sent = 0;
        while sent < replies.len() {
            // SAFETY: writing from our own buffer.
            let w =
                unsafe { libc::write(1, replies[sent..].as_ptr().cast(), replies.len() - sent) };
            if w <= 0 {
                return;
            }
            sent += w as usize;
        }
        replies.clear();
    }
}
