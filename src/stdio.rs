//! stdin and stdout as raw file descriptors.
//!
//! Not `std::io::stdin()`/`stdout()`: their buffering would hold an ejabberd reply (which has
//! no newline) until a flush, and a read blocked inside them cannot be woken by a signal.
//! Replies are written with one `write(2)` each (or one per batch of complete replies).

use std::io::{self, Read, Write};

use rustix::io::Errno;

use crate::signals::Signals;

/// fd 0. `EIO` reads as end of input: under Prosody's pty it means Prosody is gone.
pub struct StdinReader<'a> {
    signals: Option<&'a Signals>,
}

impl<'a> StdinReader<'a> {
    pub fn new(signals: Option<&'a Signals>) -> Self {
        StdinReader { signals }
    }
}

impl Read for StdinReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let stdin = rustix::stdio::stdin();
        if let Some(signals) = self.signals {
            match signals.wait_readable(stdin) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
                // poll failing on fd 0 (e.g. POLLNVAL) is left for read to report.
                Err(_) => {}
            }
        }
        match rustix::io::read(stdin, buf) {
            Ok(n) => Ok(n),
            Err(Errno::IO) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }
}

/// fd 1, unbuffered.
pub struct StdoutWriter;

impl Write for StdoutWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match rustix::io::write(rustix::stdio::stdout(), buf) {
                Err(Errno::INTR) => continue,
                other => return other.map_err(Into::into),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
