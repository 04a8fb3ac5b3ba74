#!/usr/bin/env bash
# Validates what deploy/ gives operators: the Prometheus alert rules (promtool check and unit
# tests), and the Grafana dashboard (against deploy/grafana/dashboard.schema.json, and every
# PromQL expression of its panels parsed by promtool). Installs Debian's prometheus (for
# promtool) and python3-jsonschema when missing and this runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'monitoring-check: %s\n' "$*" >&2; }

install() { # package
    "$(dirname "$0")/debian-install.sh" "$1"
}

need() { # command package
    command -v "$1" >/dev/null && return 0
    install "$2"
    command -v "$1" >/dev/null || { say "$1 is missing; install the Debian package $2"; exit 1; }
}

need promtool prometheus
need python3 python3
if ! python3 -c 'import jsonschema' 2>/dev/null; then
    install python3-jsonschema
    python3 -c 'import jsonschema' 2>/dev/null ||
        { say "jsonschema is missing; install the Debian package python3-jsonschema"; exit 1; }
fi

promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts.test.yml
# OmscModuleDown names every module (a module whose workers are gone leaves no series to
# compare with): the names must be the module queues the code declares.
python3 - deploy/prometheus/alerts.yml deploy/rabbitmq/definitions.json <<'PY'
import json, re, sys
rules, definitions = sys.argv[1:]
text = open(rules).read()
expr = text.split("alert: OmscModuleDown", 1)[1].split("- alert:", 1)[0]
named = set(re.findall(r'absent\(omsc_ready\{module="([a-z]+)"\}\)', expr))
bound = {b["destination"] for b in json.load(open(definitions))["bindings"]}
modules = {q.split("connector.", 1)[1] for q in bound if q.startswith("connector.")}
# The gateway runs only where the OMS talks HTTP (OMSC_OMS_URL): its absence is no outage,
# so it is not named (alerts.yml says why; alerts.test.yml shows a gateway that is not ready
# still fires). Its queue is in gateway-definitions.json, so this only guards a change there.
modules -= {"gateway"}
if named != modules:
    sys.exit(f"monitoring-check: OmscModuleDown names {sorted(named)}, the code's modules are {sorted(modules)}")
PY
# Every alert links its runbook, and the runbook is there: a `### <alert>` section of
# docs/operations.md, linked by its anchor from the operator's base URL.
python3 - deploy/prometheus/alerts.yml docs/operations.md <<'PY'
import re, sys
rules, operations = sys.argv[1:]
sections = set(re.findall(r"^### (\w+)$", open(operations).read(), re.M))
problems = []
for block in open(rules).read().split("- alert: ")[1:]:
    name = block.split()[0]
    link = re.search(r'runbook_url: "\{\{ \$externalLabels\.omsc_runbooks \}\}#(\w+)"', block)
    if not link:
        problems.append(f"{name} has no runbook_url from omsc_runbooks")
    elif link.group(1) != name.lower():
        problems.append(f"{name} links #{link.group(1)}, not #{name.lower()}")
    if name not in sections:
        problems.append(f"{name} has no '### {name}' runbook in docs/operations.md")
if problems:
    sys.exit("monitoring-check: " + "; ".join(problems))
PY

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
python3 - deploy/grafana/dashboard.schema.json deploy/grafana/*.json "$scratch/panels.yml" <<'PY'
import json, sys
import jsonschema

schema_path, *dashboards, out = sys.argv[1:]
schema = json.load(open(schema_path))
exprs = []
for path in dashboards:
    if path == schema_path:
        continue
    dashboard = json.load(open(path))
    jsonschema.validate(dashboard, schema)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), f"{path}: panel ids repeat"
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            # Grafana's variables, as Prometheus would see them once substituted.
            expr = target["expr"].replace("$__rate_interval", "5m").replace("$module", ".*")
            exprs.append((f"{path}: {panel['title']} {target['refId']}", expr))
    print(f"{path}: valid ({len(ids)} panels)")
# Every panel's query as a recording rule, so that promtool parses it.
with open(out, "w") as f:
    f.write("groups:\n  - name: dashboard-queries\n    rules:\n")
    for i, (where, expr) in enumerate(exprs):
        f.write(f"      # {where}\n      - record: dashboard:query_{i}\n        expr: {json.dumps(expr)}\n")
PY
promtool check rules "$scratch/panels.yml" >/dev/null
say "alert rules, their tests and the dashboard are valid"
