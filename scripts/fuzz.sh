#!/usr/bin/env bash
# Fuzz every parser that takes outside input (fuzz/fuzz_targets/*, entry points in
# src/fuzzing.rs) with libFuzzer through cargo-fuzz, each for a bounded time.
# Usage: ./scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (default 10 s, every target)
# cargo-fuzz wants a nightly compiler; RUSTC_BOOTSTRAP=1 lets the stable one accept its flags.
# No sanitizer by default (FUZZ_SANITIZER=address brings AddressSanitizer back): the crate is safe
# Rust (`unsafe_code = "deny"`), so ASan would only watch dependencies, and its build takes about
# 17 minutes cold on 2 cores against a few for this one; the targets still run with debug
# assertions (overflow checks) and libFuzzer's coverage feedback.
# Corpora grow in fuzz/corpus/<target>/ (the committed seeds are the start); crashes land in
# fuzz/artifacts/<target>/ and make this script fail.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
shift || true
# CARGO_INSTALL_ROOT (CI: beside the build) decides where cargo-fuzz is installed when missing.
if [ -n "${CARGO_INSTALL_ROOT:-}" ]; then export PATH="$CARGO_INSTALL_ROOT/bin:$PATH"; fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
# Beside the main build (CI keeps CARGO_TARGET_DIR between runs): the sanitized build is slow.
target_dir="${CARGO_TARGET_DIR:-target}/fuzz"
sanitizer="${FUZZ_SANITIZER:-none}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cd fuzz/fuzz_targets && ls ./*.rs | sed 's|^\./||; s|\.rs$||')
fi
for t in "${targets[@]}"; do
  echo "== fuzz $t for ${seconds}s"
  # A scratch copy of the corpus, so a bounded CI run does not grow the committed one.
  work="$(mktemp -d)"
  cp -r "fuzz/corpus/$t/." "$work/"
  log="$work.log"
  if ! cargo fuzz run -s "$sanitizer" --fuzz-dir fuzz --target-dir "$target_dir" "$t" "$work" -- -max_total_time="$seconds" -max_len=4096 \
    -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "fuzz target $t failed or crashed: see fuzz/artifacts/$t/" >&2
    exit 1
  fi
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$log" || tail -n 5 "$log"
  rm -rf "$work" "$log"
done
