#!/usr/bin/env bash
# Validates deploy/: lints every YAML file (yamllint), renders the kustomize base and
# overlays and validates them against the Kubernetes and KEDA schemas, checks compose.yaml
# against the Compose specification and the Dockerfile's structure, and checks all of them
# against the modules of the code (scripts/deploy_check.py says what exactly). Then breaks
# each rule on purpose to prove the checks catch it.
#
# Not run here, for want of a Docker engine and a cluster: building the image, starting the
# compose file, applying the manifests (docs/operations.md, "What deploy-check does not run").
set -euo pipefail
cd "$(dirname "$0")/.."

venv=$(scripts/deploy-tools.sh)
"$venv/bin/yamllint" --strict -c .yamllint deploy/ .yamllint
"$venv/bin/python" scripts/deploy_check.py
"$venv/bin/python" scripts/deploy_check.py --self-test
