#!/usr/bin/env bash
# Fuzzes a target of fuzz/fuzz_targets for a number of seconds (default 60): parse_message
# (the protocol parsers, default), seeded with the real payloads of crates/protocol/fixtures,
# or amqp_properties (the patched AMQP properties decoder and the runtime's check of it),
# seeded with content-header properties that carry bytes that are not UTF-8. Installs
# cargo-fuzz when it is missing. A crash leaves its input in fuzz/artifacts/ and fails the run.
#
# Usage: scripts/fuzz.sh [seconds] [target]
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
target=${2:-parse_message}
if ! [[ $target =~ ^(parse_message|amqp_properties)$ ]]; then
    echo "fuzz: unknown target $target (parse_message or amqp_properties)" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked --quiet
fi

corpus=fuzz/corpus/$target
mkdir -p "$corpus"
if [[ $target == amqp_properties ]]; then
    # Property flags, then content_type "application/\xffjson"; and flags, then a header
    # table with the name "x-\xff" and a long-string value.
    printf '\x80\x00\x11application/\xffjson' >"$corpus/seed-content-type"
    printf '\x20\x00\x00\x00\x00\x0a\x03x-\xffS\x00\x00\x00\x01v' >"$corpus/seed-header-name"
else
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
fi

# cargo fuzz passes -Z flags (sanitizer, coverage) that a stable toolchain accepts only with
# RUSTC_BOOTSTRAP; the fuzz crate is outside the workspace and nothing else is built so.
export RUSTC_BOOTSTRAP=1
cargo fuzz run "$target" "$corpus" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=1048576 -print_final_stats=1
