#!/usr/bin/env bash
# Installs Debian packages for the other scripts: as root, without questions, without the
# recommended extras. Tries the package lists it has, then refreshes them; an install that an
# earlier run left half done (dpkg interrupted) is finished first. Exits non-zero, saying so,
# when it cannot install (not root, no apt-get, a package that will not install).
#
# Usage: scripts/debian-install.sh PACKAGE...
set -uo pipefail

say() { printf 'debian-install: %s\n' "$*" >&2; }

[ "$#" -gt 0 ] || { say "usage: $0 PACKAGE..."; exit 2; }
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    say "cannot install $* (needs root and apt-get)"
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
install() { apt-get install -y -q --no-install-recommends "$@" >/dev/null; }

say "installing $* from Debian's packages"
install "$@" && exit 0
# An interrupted dpkg refuses every install until it is finished.
dpkg --configure -a >/dev/null 2>&1 || true
install "$@" && exit 0
apt-get update -q >/dev/null && install "$@" && exit 0
say "could not install $*"
exit 1
