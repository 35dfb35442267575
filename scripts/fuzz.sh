#!/usr/bin/env bash
# Coverage-guided fuzzing with cargo fuzz (nightly): builds the targets in
# fuzz/, then runs each for SECONDS (default 30) from its committed seeds in
# fuzz/seeds/<target> (new inputs go to a scratch corpus, kept with
# MOB_FUZZ_KEEP=1). A crash stops the run: libFuzzer prints the input, and
# `cargo +nightly fuzz run <target> <file>` replays it.
#   scripts/fuzz.sh [SECONDS] [TARGET...]     targets: envelope spec records control anti_entropy dns config membership
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(envelope spec records control anti_entropy dns config membership)
case "$secs" in ''|*[!0-9]*) echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2 ;; esac
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz.sh: needs the nightly toolchain (rustup toolchain install nightly)" >&2
  exit 1
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# cargo fuzz sets RUSTFLAGS, which hides .cargo/config.toml's: the agent's
# logging needs tracing's unstable `valuable` fields.
export RUSTFLAGS="${RUSTFLAGS:-} --cfg tracing_unstable"
cargo +nightly fuzz build -O
scratch=$(mktemp -d)
[ "${MOB_FUZZ_KEEP:-0}" = 1 ] || trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t" "fuzz/seeds/$t"
  out=$(cargo +nightly fuzz run -O "$t" "$scratch/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$secs" -print_final_stats=1 2>&1) || {
    echo "$out" | tail -40
    echo "fuzz target $t crashed" >&2
    exit 1
  }
  runs=$(echo "$out" | sed -n 's/^stat::number_of_executed_units: *//p')
  cov=$(echo "$out" | grep -o 'cov: [0-9]*' | tail -1)
  echo "fuzz $t: ${runs:-?} executions in ${secs} s, $cov, no crash"
done
[ "${MOB_FUZZ_KEEP:-0}" = 1 ] && echo "corpus kept in $scratch"
exit 0
