#!/usr/bin/env bash
# Runs every check CI runs: format, lints, docs, and all tests (unit,
# property, and integration tests that spawn real agents; the partition test
# needs root for network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -q -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps -q
cargo build --workspace --bins -q
MOB_AGENT_BIN="$PWD/target/debug/mob-agent" cargo nextest run --workspace --profile ci "$@"
