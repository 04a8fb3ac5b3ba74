#!/usr/bin/env bash
# Re-derives the OMS specification's field table from the vendor's XML and fails when it
# differs from the committed crates/protocol/spec/mom-fields.json, which the protocol tests
# read. The XML lives beside the repository (MOM_SPEC, default ../shared/protocol/mom-spec);
# the project builds and tests without it, so without it the check is skipped, saying so.
set -euo pipefail
cd "$(dirname "$0")/.."

spec_dir="${MOM_SPEC:-../shared/protocol/mom-spec}"
table=crates/protocol/spec/mom-fields.json

if [ ! -d "$spec_dir" ]; then
    echo "spec-check: skipped: no specification XML at $spec_dir (set MOM_SPEC to its directory)"
    exit 0
fi

derived="$(mktemp)"
trap 'rm -f "$derived"' EXIT
python3 tools/derive-spec.py "$spec_dir" > "$derived"
if ! diff -u "$table" "$derived" > "$derived.diff"; then
    head -n 40 "$derived.diff"
    rm -f "$derived.diff"
    echo "spec-check: $table differs from what $spec_dir derives;" \
        "run: tools/derive-spec.py $spec_dir > $table" >&2
    exit 1
fi
rm -f "$derived.diff"
echo "spec-check: $table is what $spec_dir derives"
