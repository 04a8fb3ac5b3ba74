#!/usr/bin/env bash
# Takes docs/report.png: a screenshot of `omsc report --serve` after real traffic. Runs every
# module (`omsc run --all`) on a database and queue prefix of its own, publishes a simulated
# stock load in a few waves a minute apart (`omsc simulate stock`), then opens the page in
# headless Chromium. Takes about four minutes. Needs the services (make services). The
# database omsc_report_demo and the report-demo. queues stay for a look afterwards
# (DATABASE_URL=postgres://postgres@127.0.0.1:5432/omsc_report_demo omsc report); the next
# run starts them afresh.
#
# Usage: scripts/report-screenshot.sh [output.png]
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-docs/report.png}
waves=${WAVES:-4}
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/omsc_report_demo
export OMSC_PREFIX=report-demo.
export OMSC_HTTP_ADDR=127.0.0.1:19467
export OMSC_STATS_FLUSH_SECS=5
export RUST_LOG=warn
chromium=$(scripts/browser.sh)
cargo build --bin omsc --features omsc/simulate
omsc=./target/debug/omsc

psql_admin() { psql -h 127.0.0.1 -U postgres -d postgres -qAt -c "$1"; }
psql_admin "DROP DATABASE IF EXISTS omsc_report_demo WITH (FORCE)"
$omsc migrate >/dev/null

$omsc run --all & worker=$!
port=19466
$omsc report --serve --listen "127.0.0.1:$port" >/dev/null & server=$!
profile=$(mktemp -d)
trap 'kill $worker $server 2>/dev/null; rm -rf "$profile"' EXIT

# The workers declare the exchanges and queues: publish once they consume.
for ((i = 0; i < 300; i++)); do
    curl -fs "http://$OMSC_HTTP_ADDR/readyz" >/dev/null && break
    sleep 0.2
done
for ((wave = 1; wave <= waves; wave++)); do
    $omsc simulate stock --exports $((wave * 150)) --skus 400 --chunk-size 50 --seed "$wave" --shuffle
    [ "$wave" -lt "$waves" ] && sleep 60
done
sleep 8
"$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --hide-scrollbars --window-size=1400,1250 \
    --screenshot="$out" "http://127.0.0.1:$port/?since=1h" 2>/dev/null
echo "wrote $out"
