#!/usr/bin/env bash
# The whole test suite: the README's test command, and exactly what CI runs (.ci/run).
# Formatting and lints first (cheap), then the binary the CLI and crash tests drive, then every
# crate's unit tests and the loopback-cluster integration tests in tests/, then POSIX conformance
# of the FUSE mount (pjdfstest + fsx; needs root, see scripts/posix.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TERM_COLOR=never
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --bins
cargo test --workspace
bash scripts/posix.sh
