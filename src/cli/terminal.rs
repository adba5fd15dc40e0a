//! The local terminal during an attach: raw mode that is restored on every way out (normal
//! return, error, panic), its size, and keys read on a thread of their own.

use std::io::{IsTerminal, Read};
use std::sync::Once;

use tokio::sync::mpsc;

/// Keys read per chunk: 4 KiB (a paste arrives in a few chunks, keystrokes one by one).
const KEY_CHUNK_BYTES: usize = 4096;
/// Key chunks queued before the reader thread waits for the attach loop.
const KEY_QUEUE_CHUNKS: usize = 16;

/// Whether stdin and stdout are both terminals (interactive use).
pub(crate) fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

/// The terminal's size as (cols, rows); 80x24 when it is not a terminal.
pub(crate) fn size() -> (u16, u16) {
    crossterm::terminal::size().ok().filter(|(c, r)| *c > 0 && *r > 0).unwrap_or((80, 24))
}

/// Raw mode while alive: every key (Ctrl-C, Ctrl-D, Ctrl-Z included) reaches the remote shell
/// as a byte, and the remote PTY does the echo. Dropping it restores the terminal; a panic
/// hook does the same, since a panic may not unwind through this value's owner.
pub(crate) struct RawMode {
    enabled: bool,
}

impl RawMode {
    /// Raw mode if stdin is a terminal; a no-op guard otherwise (piped input).
    pub(crate) fn enable() -> std::io::Result<Self> {
        if !std::io::stdin().is_terminal() {
            return Ok(Self { enabled: false });
        }
        install_panic_hook();
        crossterm::terminal::enable_raw_mode()?;
        Ok(Self { enabled: true })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if self.enabled {
            let _ = crossterm::terminal::disable_raw_mode();
        }
    }
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = crossterm::terminal::disable_raw_mode();
            previous(info);
        }));
    });
}

/// Keys from stdin, read on a dedicated thread (a blocking read that may never return must
/// not hold up the runtime). The channel ends at end of input.
pub(crate) fn keys() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(KEY_QUEUE_CHUNKS);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; KEY_CHUNK_BYTES];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    });
    rx
}
