//! What the link and its same-run baselines share: the echo program, the keys typed into it,
//! and the two blocking loops that time keystrokes and wait for a marker in the output. Every
//! side of a comparison (the link's socket, the local PTY, the plain-TCP floor) runs this same
//! client code, so the difference between their figures is what lies behind the client.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The echo program of the issue: no echo, no line discipline, one byte in and out at a time.
pub fn echo_script(count: usize) -> String {
    format!(
        "stty raw -echo; printf 'BENCH%s\\n' _GO; dd bs=1 count={count} 2>/dev/null; stty sane; echo BENCH_$((6*7))_DONE"
    )
}

/// The byte the `i`th key sends.
pub fn key(i: usize) -> u8 {
    b'a' + (i % 26) as u8
}

/// Finds `needle` in `hay` (first-byte scan: the outputs searched here rarely hold that byte).
pub fn find(hay: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    let mut at = 0;
    while let Some(i) = hay[at..].iter().position(|&b| b == first) {
        let start = at + i;
        if hay[start + 1..].starts_with(rest) {
            return true;
        }
        at = start + 1;
    }
    false
}

/// A terminal the bench types into and reads from, one blocking call each.
pub trait Terminal {
    /// Sends `bytes` (a key, or a line).
    fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()>;
    /// The next piece of output: empty if something other than output arrived; an error if
    /// the output ended or nothing came in time.
    fn output(&mut self) -> anyhow::Result<&[u8]>;
}

/// A terminal reached through a plain reader and writer: a local PTY, or the floor's socket.
pub struct Wire<'a> {
    pub reader: &'a mut dyn Read,
    pub writer: &'a mut dyn Write,
    pub buf: &'a mut [u8],
}

impl Terminal for Wire<'_> {
    fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.writer.write_all(bytes)?;
        self.writer.flush()?;
        Ok(())
    }

    fn output(&mut self) -> anyhow::Result<&[u8]> {
        match self.reader.read(self.buf) {
            Ok(0) | Err(_) => bail!("the output ended"),
            Ok(n) => Ok(&self.buf[..n]),
        }
    }
}

/// Looks for a marker in output that arrives in pieces; the marker may straddle several.
struct Marker<'m> {
    marker: &'m [u8],
    /// The last `marker.len() - 1` bytes seen (fewer at first).
    tail: Vec<u8>,
}

impl<'m> Marker<'m> {
    fn new(marker: &'m [u8]) -> Self {
        Self { marker, tail: Vec::with_capacity(2 * marker.len()) }
    }

    /// Whether the marker has gone by, with `piece` the output just received. Copies only
    /// the piece's ends, not the piece.
    fn seen(&mut self, piece: &[u8]) -> bool {
        let keep = self.marker.len().saturating_sub(1);
        self.tail.extend_from_slice(&piece[..piece.len().min(keep)]);
        if find(&self.tail, self.marker) || find(piece, self.marker) {
            return true;
        }
        if piece.len() >= keep {
            self.tail.clear();
            self.tail.extend_from_slice(&piece[piece.len() - keep..]);
        } else {
            self.tail.drain(..self.tail.len().saturating_sub(keep));
        }
        false
    }
}

/// Reads output that continues `before` (bytes already received, which may hold the marker or
/// its start) until `marker` went by; returns the bytes and the pieces of output received.
/// `within` bounds the whole wait, checked after each piece (the terminal bounds each read).
pub fn read_until(
    term: &mut impl Terminal,
    before: &[u8],
    marker: &[u8],
    within: Duration,
) -> anyhow::Result<(u64, u64)> {
    let mut scan = Marker::new(marker);
    if scan.seen(before) {
        return Ok((0, 0));
    }
    let started = Instant::now();
    let (mut total, mut pieces) = (0u64, 0u64);
    for _ in 0..100_000_000u64 {
        let piece = term
            .output()
            .with_context(|| format!("{} not seen ({total} bytes read)", String::from_utf8_lossy(marker)))?;
        if piece.is_empty() {
            continue;
        }
        total += piece.len() as u64;
        pieces += 1;
        if scan.seen(piece) {
            return Ok((total, pieces));
        }
        if started.elapsed() > within {
            bail!("{} not seen within {within:?} ({total} bytes read)", String::from_utf8_lossy(marker));
        }
    }
    bail!("the output never ended")
}

/// Types keys `first..first + n` one at a time into whatever echoes them (the echo program,
/// once it printed `BENCH_GO`) and waits for each one's echo: their round trips in
/// microseconds, and the piece of output that echoed the last one.
pub fn time_keys(term: &mut impl Terminal, first: usize, n: usize) -> anyhow::Result<(Vec<f64>, Vec<u8>)> {
    let mut samples = Vec::with_capacity(n);
    let mut last = Vec::new();
    for i in first..first + n {
        let k = key(i);
        let started = Instant::now();
        term.send(&[k])?;
        let mut echoed = false;
        for _ in 0..1_000 {
            let piece = term.output().with_context(|| format!("key {i} not echoed"))?;
            if piece.contains(&k) {
                if i + 1 == first + n {
                    last = piece.to_vec();
                }
                echoed = true;
                break;
            }
        }
        let rtt = started.elapsed();
        if !echoed {
            bail!("key {i} not echoed");
        }
        samples.push(rtt.as_secs_f64() * 1e6);
    }
    Ok((samples, last))
}
