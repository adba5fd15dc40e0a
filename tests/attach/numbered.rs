//! Checking a numbered stream (`1\r\n2\r\n...`) as a terminal showed it: cmdop's own notices
//! are taken out first (they may land in the middle of a line), then every segment between
//! two gap notices must hold consecutive numbers, and the whole must end with the expected
//! last number followed by the end marker.

#![allow(dead_code)]

use anyhow::{bail, ensure};

/// What a stream held.
#[derive(Debug)]
pub struct Numbered {
    /// First complete number seen.
    pub first: u64,
    /// Last number seen.
    pub last: u64,
    /// Bytes of complete number lines (with their line endings).
    pub bytes: usize,
    /// Gap notices seen.
    pub gaps: usize,
    /// Bytes of complete number lines after the last gap (all of them when there was none).
    pub tail_bytes: usize,
}

/// Removes every `[cmdop: ...]` notice (with the line break cmdop put before and after it);
/// returns the rest and, for each notice about dropped bytes, where it was in the rest.
pub fn strip_notices(raw: &[u8]) -> (Vec<u8>, Vec<usize>) {
    let (mut out, mut gaps, mut i) = (Vec::with_capacity(raw.len()), Vec::new(), 0);
    while i < raw.len() {
        let rest = &raw[i..];
        if rest.starts_with(b"[cmdop: ")
            && let Some(close) = rest.windows(3).position(|w| w == b"]\r\n")
        {
            let notice = &rest[..close];
            let leads_with_break =
                notice.starts_with(b"[cmdop: connection lost") || notice.windows(11).any(|w| w == b"fell behind");
            if leads_with_break && out.ends_with(b"\r\n") {
                out.truncate(out.len() - 2);
            }
            if notice.windows(7).any(|w| w == b"dropped") {
                gaps.push(out.len());
            }
            i += close + 3;
            continue;
        }
        out.push(raw[i]);
        i += 1;
    }
    (out, gaps)
}

/// Checks `text` (notices stripped, `gaps` as `strip_notices` found them). The stream starts at
/// the first line that is exactly `first_line` when given (else at the first complete line),
/// and must end with `last` and then a line holding `marker`.
pub fn check(
    text: &[u8],
    gaps: &[usize],
    first_line: Option<&str>,
    last: u64,
    marker: &str,
) -> anyhow::Result<Numbered> {
    let mut pos = match first_line {
        Some(line) => find_line(text, line).ok_or_else(|| anyhow::anyhow!("no line {line:?} in the output"))?,
        None => text.iter().position(|&b| b == b'\n').map_or(text.len(), |p| p + 1),
    };
    let mut seen = Numbered { first: 0, last: 0, bytes: 0, gaps: 0, tail_bytes: 0 };
    let (mut jump, mut lines) = (false, 0u64); // `jump`: a gap came since the last number
    while pos < text.len() {
        let end = text[pos..].iter().position(|&b| b == b'\n').map_or(text.len(), |p| pos + p + 1);
        let line = visible(&text[pos..end]);
        let line = line.as_str();
        if line.contains(marker) {
            ensure!(seen.last == last, "the stream ended at {} instead of {last}", seen.last);
            return Ok(seen);
        }
        if gaps.contains(&pos) {
            seen.gaps += 1;
            seen.tail_bytes = 0;
            jump = true;
        }
        if gaps.iter().any(|&g| g > pos && g < end) {
            // A gap tore this line: its digits are from two places; skip it.
            seen.gaps += 1;
            seen.tail_bytes = 0;
            jump = true;
            pos = end;
            continue;
        }
        match line.parse::<u64>() {
            Ok(n) if lines == 0 => (seen.first, seen.last) = (n, n),
            Ok(n) if n == seen.last + 1 || (jump && n > seen.last) => seen.last = n,
            _ => bail!("after {} came {line:?}: a byte was lost or doubled", seen.last),
        }
        jump = false;
        lines += 1;
        seen.bytes += end - pos;
        seen.tail_bytes += end - pos;
        pos = end;
    }
    bail!("the output has no {marker:?} line after {}", seen.last)
}

/// What a line shows: without its line ending, and only what follows its last carriage
/// return (a shell may print a control sequence and `\r` before the command's output).
fn visible(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches(['\r', '\n']);
    text.rsplit('\r').next().unwrap_or(text).to_string()
}

fn find_line(text: &[u8], line: &str) -> Option<usize> {
    let mut pos = 0;
    while pos < text.len() {
        let end = text[pos..].iter().position(|&b| b == b'\n').map_or(text.len(), |p| pos + p + 1);
        if visible(&text[pos..end]) == line {
            return Some(pos);
        }
        pos = end;
    }
    None
}

#[test]
fn the_checker_accepts_clean_streams_and_catches_losses() {
    let clean = b"echo\r\n\x1b[?2004l\r1\r\n2\r\n3\r\nEND\r\n";
    let seen = check(clean, &[], Some("1"), 3, "END").unwrap();
    assert_eq!((seen.first, seen.last, seen.gaps), (1, 3, 0));
    assert!(check(b"1\r\n3\r\nEND\r\n", &[], Some("1"), 3, "END").is_err(), "a missing number is caught");
    assert!(check(b"1\r\n2\r\n2\r\n3\r\nEND\r\n", &[], Some("1"), 3, "END").is_err(), "a doubled number is caught");
    let (text, gaps) =
        strip_notices(b"1\r\n2\r\n3\r\n\r\n[cmdop: connection lost; x]\r\n[cmdop: reconnected]\r\n4\r\nEND\r\n");
    assert!(gaps.is_empty());
    assert_eq!(check(&text, &gaps, Some("1"), 4, "END").unwrap().last, 4);
    let (text, gaps) =
        strip_notices(b"1\r\n2\r\n3[cmdop: 7 bytes of output were dropped while disconnected]\r\n9\r\n10\r\nEND\r\n");
    let seen = check(&text, &gaps, Some("1"), 10, "END").unwrap();
    assert_eq!(seen.gaps, 1);
}
