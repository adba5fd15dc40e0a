#!/usr/bin/env bash
# The whole test suite, set-up included: installs what the tests need (Debian's chromium for
# the browser end-to-end tests) when it is missing, checks formatting and lints, then runs
# every test and builds the benchmarks so they cannot rot. Usage: ./scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

need_chromium() { [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; }

if need_chromium; then
  echo "== installing chromium (browser end-to-end tests)"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  elif command -v sudo >/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "chromium is missing and cannot be installed without root: apt-get install chromium" >&2
    exit 1
  fi
fi

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
