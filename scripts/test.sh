#!/usr/bin/env bash
# The whole test suite, set-up included: installs what the tests need when it is missing
# (Debian's chromium for the browser end-to-end tests; the PostgreSQL server binaries, from
# which the store and multi-node tests start throwaway clusters), checks formatting and lints,
# then runs every test, builds the benchmarks and checks the supply-chain policy (cargo deny).
# The tests include every fuzz target (src/fuzzing/tests.rs: each committed seed, then seeded
# mutations, through the targets' entry points), so none of them can rot.
# Usage: ./scripts/test.sh [extra cargo test args]
# cargo deny runs when cargo-deny is installed (INSTALL_TOOLS=1 installs it: about 8 CPU-minutes,
# once). FUZZ_SECONDS=N also runs each fuzz target under libFuzzer for N seconds (default 0: the
# fuzz build compiles every dependency again with coverage instrumentation, longer than CI's
# budget on 2 cores allows; scripts/fuzz.sh alone runs them).
set -euo pipefail
cd "$(dirname "$0")/.."

need_chromium() { [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; }
need_postgres() {
  if [ -n "${PG_BIN:-}" ]; then [ ! -x "$PG_BIN/initdb" ]; return; fi
  ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

# apt-get install PACKAGE (what it is for): as root, or through sudo.
install_package() {
  echo "== installing $1 ($2)"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
  elif command -v sudo >/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
  else
    echo "$1 is missing and cannot be installed without root: apt-get install $1" >&2
    exit 1
  fi
}

if need_chromium; then install_package chromium "browser end-to-end tests"; fi
if [ "${FUZZ_SECONDS:-0}" != 0 ] && ! command -v c++ >/dev/null; then
  install_package g++ "libFuzzer, built by the fuzz targets"
fi
if need_postgres; then install_package postgresql "PostgreSQL store and multi-node tests"; fi

if ! command -v cargo >/dev/null; then
  echo "cargo is missing: install Rust from your distribution or rustup" >&2
  exit 1
fi

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy (warnings are errors)"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test"
cargo test --locked "$@"
echo "== cargo bench --no-run (benchmarks still build)"
# With the release profile: the bench profile's whole-program optimization (what the figures
# measure) adds minutes that checking that the benchmarks compile does not need.
cargo bench --locked --no-run --profile release

# Tools installed with cargo, kept beside the build (CI keeps CARGO_TARGET_DIR between runs),
# so a run pays for compiling them once.
tools="${CARGO_TARGET_DIR:-target}/tools"
export PATH="$tools/bin:$PATH"

echo "== cargo deny check bans licenses sources (advisories need a database this network cannot fetch)"
if ! cargo deny --version >/dev/null 2>&1 && [ "${INSTALL_TOOLS:-0}" = 1 ]; then
  echo "== installing cargo-deny into $tools (once; a few minutes on 2 cores)"
  cargo install --locked --root "$tools" cargo-deny
fi
if cargo deny --version >/dev/null 2>&1; then
  cargo deny --offline check bans licenses sources
else
  echo "   skipped: cargo-deny is not installed (INSTALL_TOOLS=1 ./scripts/test.sh installs it)"
fi

fuzz_seconds="${FUZZ_SECONDS:-0}"
if [ "$fuzz_seconds" != 0 ]; then
  echo "== fuzz: each target for ${fuzz_seconds}s"
  CARGO_INSTALL_ROOT="$tools" ./scripts/fuzz.sh "$fuzz_seconds"
fi
