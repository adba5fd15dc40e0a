#!/usr/bin/env bash
# The whole test suite, set-up included: installs what the tests need when it is missing
# (Debian's chromium for the browser end-to-end tests; the PostgreSQL server binaries, from
# which the store and multi-node tests start throwaway clusters), checks formatting and lints,
# then runs every test and builds the benchmarks so they cannot rot.
# Usage: ./scripts/test.sh [extra cargo test args]
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
