#!/usr/bin/env bash
# Makes sure headless Chromium is there for the report page's browser test: installs
# Debian's chromium package when it is missing and this runs as root on Debian; otherwise
# says what is missing and fails. Prints the browser's path.
set -uo pipefail

say() { printf 'browser: %s\n' "$*" >&2; }

find_chromium() {
    for candidate in "${CHROMIUM:-}" chromium chromium-browser; do
        [ -n "$candidate" ] && command -v "$candidate" 2>/dev/null && return 0
    done
    return 1
}

if find_chromium >/dev/null; then
    find_chromium
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    "$(dirname "$0")/debian-install.sh" chromium || exit 1
    find_chromium && exit 0
fi
say "Chromium is missing; install the Debian package chromium (as root: apt-get install chromium)"
exit 1
