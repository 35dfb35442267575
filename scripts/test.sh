#!/usr/bin/env bash
# Runs every check CI runs: format, lints, docs, and all tests (unit,
# property, and integration tests that spawn real agents; the partition test
# needs root for network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
cargo clippy --workspace --all-targets -q -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps -q
cargo build --workspace --bins -q
MOB_AGENT_BIN="$PWD/target/debug/mob-agent" cargo nextest run --workspace --profile ci "$@"

# Coverage-guided fuzzing (cargo fuzz, nightly): each target 30 s from its
# seeds; a crash fails the run. Required in CI.
if cargo +nightly --version >/dev/null 2>&1; then
  scripts/fuzz.sh 30
elif [ -n "${CI:-}" ]; then
  echo "fuzzing needs the nightly toolchain" >&2
  exit 1
else
  echo "fuzzing skipped: no nightly toolchain (rustup toolchain install nightly)"
fi

# The generated artefacts: the systemd unit verified (where systemd-analyze
# is), the .deb built from the debug binary (cargo-deb is installed if
# missing), and the docker demo where the engine and docker-compose are.
scripts/check-unit.sh target/debug/mob-agent
scripts/package-deb.sh --debug
if docker info >/dev/null 2>&1 && command -v docker-compose >/dev/null && command -v jq >/dev/null; then
  time scripts/docker-demo.sh --debug
else
  echo "docker demo skipped: needs a Docker Engine, docker-compose and jq"
fi
