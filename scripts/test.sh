#!/usr/bin/env bash
# Runs every vatio test on a fresh machine: checks formatting and lints, then
# runs the whole suite (unit, store conformance, end-to-end). Installs what the
# tests need that the machine may lack. Exit code is non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

need_cargo_tool() {
  # $1: cargo subcommand, $2: crate that provides it
  cargo "$1" --version >/dev/null 2>&1 || cargo install --locked "$2"
}

need_cargo_tool nextest cargo-nextest
echo "== servers the store tests run against (InfluxDB, VictoriaMetrics, SecantusDB, moto)"
bash tests/servers/install.sh
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt

echo "== format"
cargo fmt --all -- --check
echo "== lints"
cargo clippy --workspace --all-targets -- -D warnings
echo "== doc tests"
cargo test --workspace --doc
# Last, so that its summary closes the output.
echo "== tests"
echo "building the vatio binary for the crash test"; cargo build -p vatio-cluster --bin vatio
cargo nextest run --workspace --no-fail-fast
