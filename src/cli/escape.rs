//! Local keys in what the user types (pure). Ctrl-D detaches (CONTRACT.md: it never reaches
//! the remote shell). ssh-style escapes are recognized only right after Enter (or as the very
//! first keys), so they never get in the way of ordinary typing:
//! - `Enter ~ .` detaches too (a persistent session lives on; a one-shot shell ends),
//! - `Enter ~ Ctrl-D` sends one Ctrl-D (end of input) to the remote program,
//! - `Enter ~ ?` shows this help,
//! - `Enter ~ ~` sends one `~`.
//!
//! Any other key after `~` sends both.

/// The help text `~?` shows (raw-mode line endings).
pub(crate) const HELP: &str = "\r\nCtrl-D detaches. Escape sequences (after Enter):\r\n  ~.       detach\r\n  ~Ctrl-D  send Ctrl-D (end of input) to the remote program\r\n  ~?       this help\r\n  ~~       send a literal ~\r\n";

/// What the user asked for besides plain keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Leave the session (`~.`).
    Detach,
    /// Show the escape help (`~?`).
    Help,
}

/// The result of scanning some keys.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Scan {
    /// Bytes to send to the remote shell, in order.
    pub(crate) forward: Vec<u8>,
    /// An escape the user typed; keys after a detach are dropped.
    pub(crate) action: Option<Action>,
}

/// Ctrl-D: detaches locally.
const CTRL_D: u8 = 0x04;

/// The scanner's state across reads.
#[derive(Debug)]
pub(crate) struct Escapes {
    at_line_start: bool,
    tilde: bool,
}

impl Default for Escapes {
    fn default() -> Self {
        Self { at_line_start: true, tilde: false }
    }
}

impl Escapes {
    /// Scans a batch of keys.
    pub(crate) fn feed(&mut self, keys: &[u8]) -> Scan {
        let mut scan = Scan::default();
        for &b in keys {
            if std::mem::take(&mut self.tilde) {
                match b {
                    b'.' => {
                        scan.action = Some(Action::Detach);
                        return scan;
                    }
                    b'?' => scan.action = Some(Action::Help),
                    CTRL_D => scan.forward.push(CTRL_D),
                    b'~' => scan.forward.push(b'~'),
                    other => scan.forward.extend([b'~', other]),
                }
                self.at_line_start = matches!(b, b'\r' | b'\n');
                continue;
            }
            if b == CTRL_D {
                scan.action = Some(Action::Detach);
                return scan;
            }
            if self.at_line_start && b == b'~' {
                self.tilde = true;
                continue;
            }
            scan.forward.push(b);
            self.at_line_start = matches!(b, b'\r' | b'\n');
        }
        scan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tilde_dot_after_enter_detaches_and_drops_the_rest() {
        let mut e = Escapes::default();
        let scan = e.feed(b"ls\r~.more");
        assert_eq!(scan, Scan { forward: b"ls\r".to_vec(), action: Some(Action::Detach) });
    }

    #[test]
    fn escapes_work_across_reads_and_at_the_very_start() {
        let mut e = Escapes::default();
        assert_eq!(e.feed(b"~"), Scan::default());
        assert_eq!(e.feed(b"."), Scan { forward: vec![], action: Some(Action::Detach) });
    }

    #[test]
    fn ctrl_d_detaches_and_tilde_ctrl_d_sends_it() {
        let mut e = Escapes::default();
        assert_eq!(e.feed(b"ab\x04cd"), Scan { forward: b"ab".to_vec(), action: Some(Action::Detach) });
        let mut e = Escapes::default();
        assert_eq!(e.feed(b"cat\r~\x04"), Scan { forward: b"cat\r\x04".to_vec(), action: None });
    }

    #[test]
    fn a_tilde_inside_a_line_is_plain_text() {
        let mut e = Escapes::default();
        assert_eq!(e.feed(b"cd ~.x\r").forward, b"cd ~.x\r".to_vec());
    }

    #[test]
    fn double_tilde_sends_one_and_other_keys_send_both() {
        let mut e = Escapes::default();
        assert_eq!(e.feed(b"~~.").forward, b"~.".to_vec());
        let mut e = Escapes::default();
        assert_eq!(e.feed(b"~a").forward, b"~a".to_vec());
        let mut e = Escapes::default();
        assert_eq!(e.feed(b"~?"), Scan { forward: vec![], action: Some(Action::Help) });
    }
}
