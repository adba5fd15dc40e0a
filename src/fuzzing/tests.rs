//! Every fuzz target in every `cargo test`, so none can rot without libFuzzer: each committed
//! corpus file (`fuzz/corpus/<target>/`) through the target's entry point, then a bounded,
//! seeded mutation loop over them (bit flips, byte changes, truncation, splicing, inserted and
//! random bytes). Not coverage-guided: the real fuzzing is `scripts/fuzz.sh`; this proves that
//! the entry points still build, that the seeds still pass, and catches shallow regressions.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Mutated inputs per target, at most.
const MUTATED_INPUTS: usize = 20_000;
/// Wall time per target's mutation loop, at most (the test build is unoptimised and the
/// machine shared: whichever bound comes first ends the loop).
const MUTATION_TIME: Duration = Duration::from_secs(5);
/// Longest mutated input, as `scripts/fuzz.sh` bounds libFuzzer's (`-max_len=4096`).
const MAX_LEN: usize = 4096;

/// A small deterministic generator (SplitMix64): the same seed mutates the same way on every
/// run, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// The committed corpus of one target, in name order.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    let mut files: Vec<(String, Vec<u8>)> = entries
        .map(|entry| {
            let path = entry.expect("a corpus entry").path();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            (path.file_name().expect("a file name").to_string_lossy().into_owned(), bytes)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no seed: every target needs at least one", dir.display());
    files
}

/// Bytes that often sit on a parser's edges.
const INTERESTING: [u8; 12] = [0, 1, 0x7f, 0x80, 0xff, b'"', b'\\', b'{', b'}', b'%', b'=', b'\n'];

/// One mutation of `input`, drawing on `pool` for splices.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, pool: &[(String, Vec<u8>)]) {
    match rng.below(8) {
        0 if !input.is_empty() => {
            let at = rng.below(input.len());
            input[at] ^= 1 << rng.below(8);
        }
        1 if !input.is_empty() => {
            let at = rng.below(input.len());
            input[at] = if rng.below(2) == 0 { INTERESTING[rng.below(INTERESTING.len())] } else { rng.byte() };
        }
        2 => input.truncate(rng.below(input.len() + 1)),
        3 => {
            let other = &pool[rng.below(pool.len())].1;
            let keep = rng.below(input.len() + 1);
            let from = rng.below(other.len() + 1);
            input.truncate(keep);
            input.extend_from_slice(&other[from..]);
        }
        4 => {
            let at = rng.below(input.len() + 1);
            let count = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..count).map(|_| rng.byte()).collect();
            input.splice(at..at, bytes);
        }
        5 if !input.is_empty() => {
            let start = rng.below(input.len());
            let end = start + 1 + rng.below(input.len() - start);
            let chunk = input[start..end].to_vec();
            let at = rng.below(input.len() + 1);
            input.splice(at..at, chunk);
        }
        6 if !input.is_empty() => {
            let start = rng.below(input.len());
            let end = start + 1 + rng.below((input.len() - start).min(16));
            input.drain(start..end);
        }
        _ => {
            let count = rng.below(64);
            *input = (0..count).map(|_| rng.byte()).collect();
        }
    }
    input.truncate(MAX_LEN);
}

/// Runs `input` through `entry`; on a panic, says which target and input before failing.
fn run_one(target: &str, what: &str, entry: fn(&[u8]), input: &[u8]) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| entry(input))) {
        eprintln!("fuzz target {target} panicked on {what}: {} bytes, hex {}", input.len(), hex(input));
        resume_unwind(panic);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The corpus, then mutations of it until either bound; returns how many inputs ran.
fn exercise(target: &str, entry: fn(&[u8])) -> usize {
    let pool = corpus(target);
    for (name, input) in &pool {
        run_one(target, &format!("corpus file {name}"), entry, input);
    }
    let seed = target.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let mut rng = Rng(seed);
    let deadline = Instant::now() + MUTATION_TIME;
    let mut ran = pool.len();
    for i in 0..MUTATED_INPUTS {
        if Instant::now() >= deadline {
            break;
        }
        let mut input = pool[rng.below(pool.len())].1.clone();
        for _ in 0..1 + rng.below(4) {
            mutate(&mut rng, &mut input, &pool);
        }
        run_one(target, &format!("mutated input {i}"), entry, &input);
        ran += 1;
    }
    println!("{target}: {ran} inputs");
    ran
}

#[test]
fn link_token_survives_its_corpus_and_mutations() {
    exercise("link_token", super::link_token);
}

#[test]
fn agent_frames_survive_their_corpus_and_mutations() {
    exercise("agent_frames", super::agent_frames);
}

#[test]
fn control_message_survives_its_corpus_and_mutations() {
    exercise("control_message", super::control_message);
}

#[test]
fn form_bodies_survive_their_corpus_and_mutations() {
    exercise("form_bodies", super::form_bodies);
}

#[test]
fn resolver_survives_its_corpus_and_mutations() {
    exercise("resolver", super::resolver);
}

#[test]
fn duration_survives_its_corpus_and_mutations() {
    exercise("duration", super::duration);
}

#[test]
fn ws_frames_survive_their_corpus_and_mutations() {
    exercise("ws_frames", super::ws_frames);
}

#[test]
fn http2_frames_survive_their_corpus_and_mutations() {
    exercise("http2_frames", super::http2_frames);
}

#[test]
fn every_fuzz_target_has_a_replay_test() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    let mut targets: Vec<String> = std::fs::read_dir(&dir)
        .expect("fuzz/fuzz_targets")
        .map(|e| e.expect("an entry").path().file_stem().expect("a name").to_string_lossy().into_owned())
        .collect();
    targets.sort();
    let replayed = [
        "agent_frames",
        "control_message",
        "duration",
        "form_bodies",
        "http2_frames",
        "link_token",
        "resolver",
        "ws_frames",
    ];
    assert_eq!(targets, replayed, "a fuzz target was added or removed: give it a replay test in src/fuzzing/tests.rs");
}
