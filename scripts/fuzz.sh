#!/usr/bin/env bash
# Fuzzes the protocol parsers (fuzz/fuzz_targets/parse_message.rs) for a number of seconds
# (default 60), starting from a corpus seeded with the real payloads of
# crates/protocol/fixtures. Installs cargo-fuzz when it is missing. A crash leaves its input
# in fuzz/artifacts/ and fails the run.
#
# Usage: scripts/fuzz.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked --quiet
fi

corpus=fuzz/corpus/parse_message
mkdir -p "$corpus"
cp crates/protocol/fixtures/captured-order-create.json "$corpus/seed-captured-order-create"
for template in crates/protocol/fixtures/mock-templates/*.json; do
    method=$(basename "$template" .json)
    # The templates are params; wrap each in the envelope it travels in.
    {
        printf '{"jsonrpc":"2.0","id":"seed","method":"%s","params":' "$method"
        cat "$template"
        printf '}'
    } >"$corpus/seed-$method"
done

# cargo fuzz passes -Z flags (sanitizer, coverage) that a stable toolchain accepts only with
# RUSTC_BOOTSTRAP; the fuzz crate is outside the workspace and nothing else is built so.
export RUSTC_BOOTSTRAP=1
cargo fuzz run parse_message "$corpus" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=1048576 -print_final_stats=1
