#!/usr/bin/env python3
"""Validates what deploy/ gives operators, against schemas and against the code.

- Kubernetes: renders the kustomize base and every overlay with the kustomize binary
  (`$KUSTOMIZE`, installed by scripts/deploy-tools.sh), validates every object against the Kubernetes schemas of the
  oldest and newest versions we support (strict: unknown fields fail), and the KEDA objects
  against KEDA's CRD models (unknown fields fail too). Then the rules the connector relies
  on: one Deployment, ScaledObject, PodDisruptionBudget and Service per module of the code,
  probes on the metrics port, resources, a grace period above the drain time, passwords
  only from the Secret, migrations in a Job and not in the workers; and every name an
  object refers to (Secret, ConfigMap, ServiceAccount, Service, …) held by the same
  rendering, but for the production Secret made outside the repository.
- The service-bus gateway, in the renderings that talk to a bus (their ConfigMap sets
  OMSC_OMS_URL) and in no other: its Deployment like a module's (queue connector.gateway),
  its HTTP port where OMSC_GATEWAY_ADDR listens, a Service and an Ingress with TLS that reach
  that port, network policies that let the deliveries in and the calls to the bus out, the
  callback URL set, and its secrets only from the Secret.
- compose.yaml: against the Compose specification's JSON schema, and a worker service per
  module.
- The Dockerfile: hadolint lints it (scripts/deploy-check.sh); this checks only what the
  connector relies on: two stages, no shell in the runtime stage, a locked release build
  that leaves no binary behind, a numeric non-root user, the metrics port, .dockerignore.

The modules come from deploy/rabbitmq/definitions.json, and the gateway's queue from
deploy/rabbitmq/gateway-definitions.json, which a test keeps equal to what the workers
declare (`omsc topology definitions`, `--gateway`), and the binaries from the Cargo
manifests. `--self-test` breaks each rule on purpose and checks that it is caught.

Usage: deploy_check.py [--self-test]    (run by scripts/deploy-check.sh, in .venv)
"""

from __future__ import annotations

import copy
import os
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import kubernetes_validate
import yaml
from cloudcoil.models.keda import v1alpha1 as keda
from cloudcoil.models.prometheus_operator import v1 as prometheus_operator

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUSTOMIZATIONS = ["k8s/base", "k8s/overlays/dev", "k8s/overlays/prod", "k8s/overlays/bus", "k8s/overlays/monitored"]
# The oldest Kubernetes the manifests are for (matchLabelKeys, unhealthyPodEvictionPolicy)
# and the newest the schemas know: an API removed in between fails here.
KUBERNETES_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
METRICS_PORT = 9464
# What the runtime spends after OMSC_DRAIN_TIMEOUT_SECS before it exits: up to 2 s for its
# tasks to stop, then up to 5 s for the last statistics flush (runtime::config::STOP_MARGIN
# and LAST_FLUSH_LIMIT; a unit test there keeps this figure equal to their sum).
RUNTIME_SHUTDOWN_MARGIN_SECS = 7
SECRET_KEYS = {"DATABASE_URL", "AMQP_URL"}
# Secrets a worker may have; when it has them, only from a Secret.
OPTIONAL_SECRET_KEYS = {"OMSC_REGISTRATION_SECRET", "OMSC_OMS_OAUTH_CLIENT_SECRET"}
# The gateway's HTTP port (OMSC_GATEWAY_ADDR's default) and the port the bus is called on.
GATEWAY_PORT = 9480
HTTPS_PORT = 443


class Problems(list):
    def add(self, where: str, what: str) -> None:
        self.append(f"{where}: {what}")


# --- what the code says -------------------------------------------------------------------


def module_queues(definitions: dict) -> dict[str, str]:
    """module -> main queue: the queues that exchanges are bound to (not retry, not dead)."""
    bound = {b["destination"] for b in definitions["bindings"]}
    return {q.split("connector.", 1)[1]: q for q in sorted(bound) if q.startswith("connector.")}


def workspace_binaries() -> set[str]:
    names = set()
    for manifest in ROOT.glob("crates/*/Cargo.toml"):
        for binary in tomllib.loads(manifest.read_text()).get("bin", []):
            names.add(binary["name"])
    return names


# --- Kubernetes ---------------------------------------------------------------------------


def render(kustomization: str) -> list[dict]:
    kustomize = os.environ.get("KUSTOMIZE", "kustomize")
    result = subprocess.run([kustomize, "build", str(DEPLOY / kustomization)], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"kustomize build {kustomization} failed:\n{result.stderr}")
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def name_of(doc: dict) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def differences(given, kept, path="") -> list[str]:
    """Where `kept` (what a model kept of `given`) lost or changed something."""
    if isinstance(given, dict):
        if not isinstance(kept, dict):
            return [f"{path or '/'} is not an object"]
        out = []
        for key, value in given.items():
            if key not in kept:
                out.append(f"{path}/{key} is not a field")
            else:
                out.extend(differences(value, kept[key], f"{path}/{key}"))
        return out
    if isinstance(given, list):
        if not isinstance(kept, list) or len(kept) != len(given):
            return [f"{path} changed"]
        return [d for i, (g, k) in enumerate(zip(given, kept)) for d in differences(g, k, f"{path}/{i}")]
    return [] if given == kept and type(given) is type(kept) else [f"{path} = {given!r} is not valid"]


# Custom resources, validated against their CRD models (unknown fields fail too).
CRD_MODELS = {"keda.sh/": ("KEDA", keda), "monitoring.coreos.com/": ("Prometheus Operator", prometheus_operator)}


def check_schema(doc: dict, where: str, problems: Problems) -> None:
    for group, (owner, models) in CRD_MODELS.items():
        if not doc.get("apiVersion", "").startswith(group):
            continue
        model = getattr(models, doc.get("kind", ""), None)
        if model is None:
            problems.add(where, f"no {owner} model for {doc.get('kind')}")
            return
        try:
            kept = model.model_validate(doc).model_dump(by_alias=True, exclude_unset=True, mode="json")
        except Exception as e:  # pydantic's ValidationError, with every field it refused
            problems.add(where, f"not a valid {owner} {doc['kind']}: {e}")
            return
        for difference in differences(doc, kept):
            problems.add(where, f"{owner} {doc['kind']}: {difference}")
        return
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.add(where, f"Kubernetes {version}: {e.message} at /{'/'.join(map(str, e.path))}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.add(where, f"Kubernetes {version} has no {doc.get('apiVersion')} {doc.get('kind')}")


def env_value(container: dict, name: str):
    for var in container.get("env", []):
        if var["name"] == name:
            return var
    return None


def gateway_port(container: dict) -> int:
    """The port OMSC_GATEWAY_ADDR makes the gateway listen on."""
    var = env_value(container, "OMSC_GATEWAY_ADDR")
    value = (var or {}).get("value", f"0.0.0.0:{GATEWAY_PORT}")
    try:
        return int(value.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return -1


def check_pod_monitors(monitors: list[dict], deployments: dict[str, dict], here: str, problems: Problems) -> None:
    """A PodMonitor selects every worker pod and scrapes a port each of them names."""
    for monitor in monitors:
        where = f"{here} PodMonitor/{monitor['metadata']['name']}"
        wanted = monitor["spec"].get("selector", {}).get("matchLabels", {})
        for name, deployment in deployments.items():
            template = deployment["spec"]["template"]
            labels = template["metadata"].get("labels", {})
            if any(labels.get(k) != v for k, v in wanted.items()):
                problems.add(where, f"its selector misses the pods of Deployment {name}")
                continue
            ports = {p.get("name") for c in template["spec"]["containers"] for p in c.get("ports", [])}
            for endpoint in monitor["spec"].get("podMetricsEndpoints", []):
                if endpoint.get("port") not in ports:
                    problems.add(where, f"scrapes port {endpoint.get('port')!r}, which the pods of {name} do not name")
                if endpoint.get("path", "/metrics") != "/metrics":
                    problems.add(where, f"scrapes {endpoint.get('path')}, not /metrics")


def check_rules(docs: list[dict], kustomization: str, modules: dict[str, str], binaries: set[str], problems: Problems,
                gateway: dict[str, str] | None = None) -> None:
    by_kind: dict[str, list[dict]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    config = {}
    for cm in by_kind.get("ConfigMap", []):
        if cm["metadata"]["name"].startswith("omsc-config"):
            config = cm.get("data", {})
    drain = int(config.get("OMSC_DRAIN_TIMEOUT_SECS", 10))
    prefix = config.get("OMSC_PREFIX", "")
    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in by_kind.get("ScaledObject", [])}
    auths = {a["metadata"]["name"]: a for a in by_kind.get("TriggerAuthentication", [])}
    here = f"{kustomization}"

    # The gateway belongs to the renderings that talk to a bus, and to them alone.
    bus = config.get("OMSC_OMS_URL", "").strip()
    if bus:
        modules = {**modules, **(gateway or {})}
        if not config.get("OMSC_CALLBACK_URL", "").strip():
            problems.add(here, "OMSC_OMS_URL is set but not OMSC_CALLBACK_URL: the bus would not know where to deliver")
    elif "omsc-gateway" in deployments:
        problems.add(here, "Deployment omsc-gateway runs without OMSC_OMS_URL in the ConfigMap: it would talk to no bus")
        deployments.pop("omsc-gateway")

    check_pod_monitors(by_kind.get("PodMonitor", []), deployments, here, problems)

    expected = {f"omsc-{module}" for module in modules}
    for missing in sorted(expected - deployments.keys()):
        problems.add(here, f"no Deployment {missing} for the module's queue (add deploy/k8s/base/modules/{missing[5:]})")
    for extra in sorted(deployments.keys() - expected):
        problems.add(here, f"Deployment {extra} runs no module of the code")

    for name, deployment in deployments.items():
        where = f"{here} Deployment/{name}"
        module = name.removeprefix("omsc-")
        spec = deployment["spec"]
        pod = spec["template"]["spec"]
        labels = spec["template"]["metadata"].get("labels", {})
        if "replicas" in spec:
            problems.add(where, "sets replicas: the ScaledObject's autoscaler owns the count")
        if spec["selector"].get("matchLabels", {}).get("app.kubernetes.io/component") != module:
            problems.add(where, "the selector does not pick the module's pods alone")
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if grace <= drain + RUNTIME_SHUTDOWN_MARGIN_SECS:
            problems.add(where, f"terminationGracePeriodSeconds {grace} is not above the drain time {drain}+{RUNTIME_SHUTDOWN_MARGIN_SECS}s")
        security = pod.get("securityContext", {})
        if not security.get("runAsNonRoot") or security.get("runAsUser", 0) == 0:
            problems.add(where, "must run as a non-root user")
        containers = pod["containers"]
        if len(containers) != 1:
            problems.add(where, "one container per worker pod")
            continue
        container = containers[0]
        if container.get("command") != [f"/usr/local/bin/omsc-{module}"]:
            problems.add(where, f"runs {container.get('command')}, not omsc-{module}")
        if f"omsc-{module}" not in binaries:
            problems.add(where, f"no binary omsc-{module} in the workspace")
        ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        if ports.get("metrics") != METRICS_PORT:
            problems.add(where, f"the metrics port is not {METRICS_PORT}")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = container.get(probe, {}).get("httpGet", {})
            port = get.get("port")
            port = ports.get(port, port)
            if get.get("path") != path or port != METRICS_PORT:
                problems.add(where, f"{probe} must GET {path} on port {METRICS_PORT}")
        resources = container.get("resources", {})
        for kind, keys in (("requests", ("cpu", "memory")), ("limits", ("memory",))):
            for key in keys:
                if key not in resources.get(kind, {}):
                    problems.add(where, f"no {kind}.{key}")
        migrate = env_value(container, "OMSC_MIGRATE")
        if not migrate or migrate.get("value") != "false":
            problems.add(where, "workers must not migrate (OMSC_MIGRATE=false; the Job does)")
        for key in SECRET_KEYS:
            var = env_value(container, key)
            if not var or "secretKeyRef" not in var.get("valueFrom", {}):
                problems.add(where, f"{key} must come from a Secret")
        for key in OPTIONAL_SECRET_KEYS:
            var = env_value(container, key)
            if var is not None and "secretKeyRef" not in var.get("valueFrom", {}):
                problems.add(where, f"{key} must come from a Secret")
        if not container.get("securityContext", {}).get("readOnlyRootFilesystem"):
            problems.add(where, "the root filesystem should be read-only")

        so = scaled.get(name)
        if so is None:
            problems.add(where, "no ScaledObject scales it")
        else:
            sw = f"{here} ScaledObject/{so['metadata']['name']}"
            s = so["spec"]
            lo, hi = s.get("minReplicaCount", 0), s.get("maxReplicaCount", 100)
            if not isinstance(lo, int) or not isinstance(hi, int):
                lo, hi = 1, 1  # the schema check reports the type
            if lo < 1:
                problems.add(sw, "minReplicaCount must be 1 or more (outbox relays and the settler run in the workers)")
            if hi < lo:
                problems.add(sw, "maxReplicaCount is below minReplicaCount")
            if "cooldownPeriod" not in s:
                problems.add(sw, "no cooldownPeriod")
            if "scaleDown" not in s.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior", {}):
                problems.add(sw, "no scale-down behaviour: the HPA would drop replicas between two waves")
            for t in s.get("triggers", []):
                if t.get("type") != "postgresql":
                    continue
                if f"module = '{module}'" not in t["metadata"].get("query", ""):
                    problems.add(sw, "its outbox trigger counts another module's rows")
                auth = auths.get(t.get("authenticationRef", {}).get("name"))
                if auth is None or not any(r.get("key") == "DATABASE_URL" for r in auth["spec"].get("secretTargetRef", [])):
                    problems.add(sw, "KEDA must read the database's address from the Secret's DATABASE_URL")
            triggers = [t for t in s.get("triggers", []) if t.get("type") == "rabbitmq"]
            if len(triggers) != 1:
                problems.add(sw, "one rabbitmq trigger")
            for t in triggers:
                queue = t["metadata"].get("queueName")
                if queue != prefix + modules.get(module, "?"):
                    problems.add(sw, f"scales on {queue}, not on {prefix}{modules.get(module)}")
                if t["metadata"].get("mode") != "QueueLength" or not t["metadata"].get("value", "").isdigit():
                    problems.add(sw, "scales on QueueLength with a whole number of messages per replica")
                auth = auths.get(t.get("authenticationRef", {}).get("name"))
                if auth is None:
                    problems.add(sw, "its TriggerAuthentication is not defined")
                elif not any(r.get("key") == "AMQP_URL" for r in auth["spec"].get("secretTargetRef", [])):
                    problems.add(sw, "KEDA must read the broker's address from the Secret's AMQP_URL")

        def selects(selector: dict) -> bool:
            wanted = selector.get("matchLabels", {})
            return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())

        def selects_only_module(selector: dict) -> bool:
            return selects(selector) and selector.get("matchLabels", {}).get("app.kubernetes.io/component") == module

        if not any(selects_only_module(p["spec"].get("selector", {})) for p in by_kind.get("PodDisruptionBudget", [])):
            problems.add(where, "no PodDisruptionBudget for its pods")
        if not any(
            selects_only_module({"matchLabels": s["spec"].get("selector", {})})
            and any(p.get("port") == METRICS_PORT for p in s["spec"].get("ports", []))
            for s in by_kind.get("Service", [])
        ):
            problems.add(where, "no metrics Service for its pods")
        # Policies add up: what any policy that selects the pods allows, they may do.
        policies = [n for n in by_kind.get("NetworkPolicy", []) if selects(n["spec"].get("podSelector", {}))]
        if not policies:
            problems.add(where, "no NetworkPolicy applies to its pods")
        egress = {p.get("port") for n in policies for rule in n["spec"].get("egress", []) for p in rule.get("ports", [])}
        ingress = {p.get("port") for n in policies for rule in n["spec"].get("ingress", []) for p in rule.get("ports", [])}
        if policies and not {5432, 5672} <= egress:
            problems.add(where, "its network policies must let it reach PostgreSQL and RabbitMQ")

        if module == "gateway":
            listens = gateway_port(container)
            if ports.get("http") != listens:
                problems.add(where, f"its port named http is not {listens}, where OMSC_GATEWAY_ADDR listens")
            if policies and listens not in ingress:
                problems.add(where, f"its network policies do not let the bus's deliveries in on {listens}")
            if policies and HTTPS_PORT not in egress:
                problems.add(where, f"its network policies do not let it call the bus on {HTTPS_PORT}")
            services = [
                s for s in by_kind.get("Service", [])
                if selects_only_module({"matchLabels": s["spec"].get("selector", {})})
                and any(p.get("targetPort") in ("http", listens) for p in s["spec"].get("ports", []))
            ]
            if not services:
                problems.add(where, f"no Service reaches its port {listens}")
            served = {
                (s["metadata"]["name"], key)
                for s in services for p in s["spec"].get("ports", []) if p.get("targetPort") in ("http", listens)
                for key in (p.get("name"), p.get("port"))
            }
            ingresses = by_kind.get("Ingress", [])
            reaching = []
            for ing in ingresses:
                iw = f"{here} Ingress/{ing['metadata']['name']}"
                for rule in ing["spec"].get("rules", []):
                    for path in rule.get("http", {}).get("paths", []):
                        backend = path.get("backend", {}).get("service", {})
                        port = backend.get("port", {})
                        key = port.get("name", port.get("number"))
                        if (backend.get("name"), key) in served:
                            reaching.append((ing, rule.get("host")))
                        elif backend.get("name") in {s["metadata"]["name"] for s in services}:
                            problems.add(iw, f"its backend port {key} is not the gateway Service's port for {listens}")
            if not reaching:
                problems.add(where, "no Ingress reaches it: the bus cannot deliver")
            for ing, host in reaching:
                covered = {h for tls in ing["spec"].get("tls", []) for h in tls.get("hosts", [])}
                if host not in covered:
                    problems.add(f"{here} Ingress/{ing['metadata']['name']}", f"{host} is served without TLS")

    jobs = by_kind.get("Job", [])
    migrations = [j for j in jobs if j["spec"]["template"]["spec"]["containers"][0].get("command", [])[-2:] == ["/usr/local/bin/omsc", "migrate"][-2:] or
                  j["spec"]["template"]["spec"]["containers"][0].get("command", [])[-1:] == ["migrate"]]
    if not migrations:
        problems.add(here, "no Job runs `omsc migrate`")
    for job in migrations:
        var = env_value(job["spec"]["template"]["spec"]["containers"][0], "DATABASE_URL")
        if not var or "secretKeyRef" not in var.get("valueFrom", {}):
            problems.add(f"{here} Job/{job['metadata']['name']}", "DATABASE_URL must come from a Secret")
    if kustomization.endswith("prod"):
        for secret in by_kind.get("Secret", []):
            problems.add(f"{here} Secret/{secret['metadata']['name']}", "production credentials do not belong in the repository")
    for cm in by_kind.get("ConfigMap", []):
        for key in (SECRET_KEYS | OPTIONAL_SECRET_KEYS) & set(cm.get("data", {})):
            problems.add(f"{here} ConfigMap/{cm['metadata']['name']}", f"{key} carries a password: it belongs in the Secret")


# Objects a rendering may name without holding them: made outside the repository on purpose.
# The production Secret carries the passwords and is created by hand or by a secret manager
# (deploy/k8s/overlays/prod/kustomization.yaml); the base is not applied on its own.
EXTERNAL = {
    "k8s/base": {("Secret", "omsc-secrets")},
    "k8s/overlays/prod": {("Secret", "omsc-secrets")},
    "k8s/overlays/monitored": {("Secret", "omsc-secrets")},
    # And the certificate of the callback URL, made by cert-manager or by hand.
    "k8s/overlays/bus": {("Secret", "omsc-secrets"), ("Secret", "omsc-gateway-tls")},
}


def references(doc: dict) -> list[tuple[str, str, str]]:
    """The (kind, name, where) of every object this one names by name."""
    refs = []
    kind = doc["kind"]
    spec = doc.get("spec", {})
    pod = None
    if kind in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
        pod = spec.get("template", {}).get("spec", {})
    if pod is not None:
        if "serviceAccountName" in pod:
            refs.append(("ServiceAccount", pod["serviceAccountName"], "serviceAccountName"))
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            for e in c.get("env", []):
                source = e.get("valueFrom", {})
                if "secretKeyRef" in source:
                    refs.append(("Secret", source["secretKeyRef"]["name"], f"env {e['name']}"))
                if "configMapKeyRef" in source:
                    refs.append(("ConfigMap", source["configMapKeyRef"]["name"], f"env {e['name']}"))
            for e in c.get("envFrom", []):
                if "secretRef" in e:
                    refs.append(("Secret", e["secretRef"]["name"], "envFrom"))
                if "configMapRef" in e:
                    refs.append(("ConfigMap", e["configMapRef"]["name"], "envFrom"))
        for v in pod.get("volumes", []):
            if "secret" in v:
                refs.append(("Secret", v["secret"]["secretName"], f"volume {v['name']}"))
            if "configMap" in v:
                refs.append(("ConfigMap", v["configMap"]["name"], f"volume {v['name']}"))
    if kind == "TriggerAuthentication":
        for r in spec.get("secretTargetRef", []):
            refs.append(("Secret", r["name"], f"secretTargetRef {r.get('parameter')}"))
    if kind == "ScaledObject":
        target = spec.get("scaleTargetRef", {})
        refs.append((target.get("kind", "Deployment"), target.get("name"), "scaleTargetRef"))
        for t in spec.get("triggers", []):
            if "authenticationRef" in t:
                refs.append(("TriggerAuthentication", t["authenticationRef"]["name"], f"trigger {t.get('type')}"))
    if kind == "Ingress":
        backends = [spec.get("defaultBackend", {})]
        for rule in spec.get("rules", []):
            backends += [p.get("backend", {}) for p in rule.get("http", {}).get("paths", [])]
        for b in backends:
            if "service" in b:
                refs.append(("Service", b["service"]["name"], "backend"))
        for tls in spec.get("tls", []):
            if "secretName" in tls:
                refs.append(("Secret", tls["secretName"], "tls"))
    return refs


def check_references(docs: list[dict], kustomization: str, problems: Problems) -> None:
    """Every name a rendered object refers to exists in the same rendering (or is external on
    purpose): a generator's hash suffix that kustomize did not carry to a reference, or a
    renamed object, leaves a name that nothing answers to."""
    present = {(d["kind"], d["metadata"]["name"]) for d in docs}
    allowed = EXTERNAL.get(kustomization, set())
    for doc in docs:
        for kind, name, field in references(doc):
            if (kind, name) not in present and (kind, name) not in allowed:
                problems.add(f"{kustomization} {name_of(doc)}", f"{field} names {kind} {name}, which this rendering does not hold")


def check_kubernetes(modules, binaries, problems: Problems, rendered=None, gateway=None) -> dict[str, list[dict]]:
    rendered = rendered or {k: render(k) for k in KUSTOMIZATIONS}
    for kustomization, docs in rendered.items():
        for doc in docs:
            check_schema(doc, f"{kustomization} {name_of(doc)}", problems)
        check_rules(docs, kustomization, modules, binaries, problems, gateway)
        check_references(docs, kustomization, problems)
    return rendered


# --- compose.yaml -------------------------------------------------------------------------


def check_compose_schema(path: Path, problems: Problems) -> None:
    venv_bin = Path(sys.executable).parent
    result = subprocess.run(
        [str(venv_bin / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        problems.add(str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path), "does not follow the Compose specification:\n" + result.stdout + result.stderr)


def check_compose_rules(compose: dict, modules: dict[str, str], problems: Problems, gateway: dict[str, str] | None = None) -> None:
    where = "deploy/compose.yaml"
    services = compose.get("services", {})
    workers = {}
    for name, service in services.items():
        entry = service.get("entrypoint") or []
        if entry and Path(entry[0]).name.startswith("omsc-"):
            workers[Path(entry[0]).name.removeprefix("omsc-")] = (name, service)
    for module in sorted(modules.keys() - workers.keys()):
        problems.add(where, f"no worker service runs omsc-{module}")
    # The gateway is there for a bus only: behind a profile, with the bus's URL, and it
    # publishes its HTTP port (the bus's way in) and nothing else.
    for module in sorted((gateway or {}).keys() & workers.keys()):
        name, service = workers[module]
        env = service.get("environment", {})
        if not service.get("profiles"):
            problems.add(f"{where} {name}", "the gateway starts only with a profile: without a bus it has nothing to do")
        if not str(env.get("OMSC_OMS_URL", "")).strip():
            problems.add(f"{where} {name}", "the gateway needs OMSC_OMS_URL")
        published = [str(p).rsplit(":", 1)[-1] for p in service.get("ports", [])]
        if published != [str(GATEWAY_PORT)]:
            problems.add(f"{where} {name}", f"the gateway publishes its port {GATEWAY_PORT} alone, not {published}")
    if "migrate" not in services or services["migrate"].get("command") != ["migrate"]:
        problems.add(where, "a migrate service runs `omsc migrate` before the workers")
    for module, (name, service) in workers.items():
        env = service.get("environment", {})
        if module in (gateway or {}):
            service = {k: v for k, v in service.items() if k != "ports"}
        if str(env.get("OMSC_MIGRATE")) != "false":
            problems.add(f"{where} {name}", "workers must not migrate (OMSC_MIGRATE=false)")
        if service.get("depends_on", {}).get("migrate", {}).get("condition") != "service_completed_successfully":
            problems.add(f"{where} {name}", "must wait for the migrate service to complete")
        if "ports" in service:
            problems.add(f"{where} {name}", "a worker publishes no host port, or it could not be scaled")


# --- Dockerfile ---------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        current += " " + stripped.removesuffix("\\").strip() if current else stripped.removesuffix("\\").strip()
        if not stripped.endswith("\\"):
            keyword, _, args = current.partition(" ")
            out.append((keyword.upper(), args.strip()))
            current = ""
    if current:
        out.append(("<unterminated>", current))
    return out


def check_dockerfile(text: str, ignore: str, binaries: set[str], problems: Problems) -> None:
    where = "deploy/docker/Dockerfile"
    instructions = dockerfile_instructions(text)
    stages = []
    for keyword, args in instructions:
        if keyword == "FROM":
            words = args.split()
            alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append({"image": words[0], "alias": alias, "body": []})
        elif stages:
            stages[-1]["body"].append((keyword, args))
    if len(stages) < 2:
        problems.add(where, "a multi-stage build: the toolchain stays out of the image")
        return
    final = stages[-1]
    for keyword, args in final["body"]:
        if keyword == "RUN":
            problems.add(where, "the runtime image has no shell: no RUN in the last stage")
    for stage in stages:
        for keyword, args in stage["body"]:
            if keyword == "RUN" and "cargo build" in args and not all(f in args for f in ("--release", "--locked")):
                problems.add(where, "cargo build --release --locked: the image is built from Cargo.lock")
    users = [args for keyword, args in final["body"] if keyword == "USER"]
    if not users or users[-1].split(":")[0] in {"0", "root"} or not users[-1].split(":")[0].isdigit():
        problems.add(where, "the last stage must run as a non-root user, by number (runAsNonRoot checks it)")
    if not any(keyword == "EXPOSE" and str(METRICS_PORT) in args.split() for keyword, args in final["body"]):
        problems.add(where, f"EXPOSE {METRICS_PORT} (metrics and probes)")
    copied = " ".join(args for s in stages for k, args in s["body"] if k == "RUN")
    glob = re.search(r"-name '([^']+)'", copied)
    pattern = glob.group(1) if glob else None
    for binary in sorted(binaries):
        if pattern is None or not Path(binary).match(pattern):
            problems.add(where, f"the binary {binary} does not reach the image")
    ignored = {line.strip().rstrip("/") for line in ignore.splitlines() if line.strip() and not line.startswith("#")}
    for needed in ("target", ".git", ".venv"):
        if needed not in ignored:
            problems.add("deploy/docker/Dockerfile.dockerignore", f"{needed}/ must stay out of the build context")


# --- main ---------------------------------------------------------------------------------


def inputs():
    definitions = json.loads((DEPLOY / "rabbitmq/definitions.json").read_text())
    modules = module_queues(definitions)
    gateway = module_queues(json.loads((DEPLOY / "rabbitmq/gateway-definitions.json").read_text()))
    binaries = {b for b in workspace_binaries() if b.startswith("omsc")}
    return modules, gateway, binaries


def check_all() -> Problems:
    problems = Problems()
    modules, gateway, binaries = inputs()
    if not modules:
        problems.add("deploy/rabbitmq/definitions.json", "no module queue")
    if set(gateway) != {"gateway"}:
        problems.add("deploy/rabbitmq/gateway-definitions.json", f"holds {sorted(gateway)}, not the gateway's queue alone")
    rendered = check_kubernetes(modules, binaries, problems, gateway=gateway)
    if not any("omsc-gateway" in {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"} for docs in rendered.values()):
        problems.add("deploy/k8s", "no rendering deploys the gateway (deploy/k8s/overlays/bus)")
    count = sum(len(docs) for docs in rendered.values())
    compose_path = DEPLOY / "compose.yaml"
    check_compose_schema(compose_path, problems)
    check_compose_rules(yaml.safe_load(compose_path.read_text()), modules, problems, gateway)
    check_dockerfile(
        (DEPLOY / "docker/Dockerfile").read_text(),
        (DEPLOY / "docker/Dockerfile.dockerignore").read_text(),
        binaries, problems,
    )
    if not problems:
        print(f"deploy-check: {count} Kubernetes objects in {len(rendered)} renderings valid against "
              f"Kubernetes {' and '.join(KUBERNETES_VERSIONS)} and KEDA and the Prometheus Operator; modules {', '.join(sorted(modules))} "
              f"deployed, and the gateway where a bus is set; compose.yaml and the Dockerfile are sound")
    return problems


def self_test() -> int:
    """Each rule, broken on purpose, must be reported: a check that cannot fail checks nothing."""
    modules, gateway, binaries = inputs()
    rendered = {k: render(k) for k in KUSTOMIZATIONS}
    base = rendered["k8s/overlays/prod"]

    def find(docs, kind):
        return next(d for d in docs if d["kind"] == kind)

    def k8s_case(mutate):
        docs = copy.deepcopy(base)
        mutate(docs)
        problems = Problems()
        check_kubernetes(modules, binaries, problems, {"k8s/overlays/prod": docs})
        return problems

    def container(docs):
        return find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]

    def named(docs, kind, name):
        return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)

    def monitored_case(mutate):
        docs = copy.deepcopy(rendered["k8s/overlays/monitored"])
        mutate(docs)
        problems = Problems()
        check_kubernetes(modules, binaries, problems, {"k8s/overlays/monitored": docs})
        return problems

    def bus_case(mutate):
        docs = copy.deepcopy(rendered["k8s/overlays/bus"])
        mutate(docs)
        problems = Problems()
        check_kubernetes(modules, binaries, problems, {"k8s/overlays/bus": docs}, gateway)
        return problems

    def set_env(c, name, value):
        """Replaces the variable `name` of container `c` by a plain value."""
        c["env"] = [e for e in c["env"] if e["name"] != name] + [{"name": name, "value": value}]

    def gateway_container(docs):
        return named(docs, "Deployment", "omsc-gateway")["spec"]["template"]["spec"]["containers"][0]

    def bus_config(docs):
        return next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("omsc-config"))["data"]

    def add_gateway_to_prod(docs):
        docs.append(copy.deepcopy(named(rendered["k8s/overlays/bus"], "Deployment", "omsc-gateway")))

    def prod_with_gateway():
        problems = Problems()
        docs = copy.deepcopy(base)
        add_gateway_to_prod(docs)
        check_rules(docs, "k8s/overlays/prod", modules, binaries, problems, gateway)
        return problems

    def dev_case(mutate):
        docs = copy.deepcopy(rendered["k8s/overlays/dev"])
        mutate(docs)
        problems = Problems()
        check_references(docs, "k8s/overlays/dev", problems)
        return problems

    def rename_secret_refs(docs):
        for auth in (d for d in docs if d["kind"] == "TriggerAuthentication"):
            for ref in auth["spec"]["secretTargetRef"]:
                ref["name"] = "omsc-secrets"

    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    dockerfile = (DEPLOY / "docker/Dockerfile").read_text()
    ignore = (DEPLOY / "docker/Dockerfile.dockerignore").read_text()

    def compose_case(mutate):
        doc = copy.deepcopy(compose)
        mutate(doc)
        problems = Problems()
        check_compose_rules(doc, modules, problems, gateway)
        return problems

    def compose_schema_case(mutate):
        doc = copy.deepcopy(compose)
        mutate(doc)
        path = ROOT / ".venv" / "compose-self-test.yaml"
        path.write_text(yaml.safe_dump(doc))
        problems = Problems()
        check_compose_schema(path, problems)
        path.unlink()
        return problems

    def docker_case(old, new):
        assert old in dockerfile, old
        problems = Problems()
        check_dockerfile(dockerfile.replace(old, new), ignore, binaries, problems)
        return problems

    cases = {
        "a misspelt Deployment field": k8s_case(lambda d: container(d).update(imagePullPolicyy="Always")),
        "a misspelt ScaledObject field": k8s_case(lambda d: find(d, "ScaledObject")["spec"].update(cooldownPerod=300)),
        "a ScaledObject field of the wrong type": k8s_case(lambda d: find(d, "ScaledObject")["spec"].update(maxReplicaCount="six")),
        "a grace period below the drain time": k8s_case(lambda d: find(d, "Deployment")["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=5)),
        "a liveness probe on the wrong path": k8s_case(lambda d: container(d)["livenessProbe"]["httpGet"].update(path="/readyz")),
        "no memory limit": k8s_case(lambda d: container(d)["resources"]["limits"].pop("memory")),
        "a password in plain sight": k8s_case(lambda d: container(d)["env"].__setitem__(1, {"name": "DATABASE_URL", "value": "postgres://omsc:secret@db/omsc"})),
        "a worker that migrates": k8s_case(lambda d: container(d)["env"].__setitem__(0, {"name": "OMSC_MIGRATE", "value": "true"})),
        "a module without its Deployment": k8s_case(lambda d: d.remove(find(d, "Deployment"))),
        "scaling on another queue": k8s_case(lambda d: find(d, "ScaledObject")["spec"]["triggers"][0]["metadata"].update(queueName="connector.other")),
        "an outbox trigger on another module": k8s_case(lambda d: next(
            t for so in d if so["kind"] == "ScaledObject" for t in so["spec"]["triggers"] if t["type"] == "postgresql"
        )["metadata"].update(query="SELECT count(*) FROM outbox WHERE module = 'other'")),
        "no PodDisruptionBudget": k8s_case(lambda d: d.remove(find(d, "PodDisruptionBudget"))),
        "no migrations Job": k8s_case(lambda d: d.remove(find(d, "Job"))),
        "a TriggerAuthentication naming the generated Secret without its hash": dev_case(rename_secret_refs),
        "a Deployment naming a missing ConfigMap": dev_case(lambda d: container(d)["envFrom"][0]["configMapRef"].update(name="omsc-config")),
        "a Deployment naming a missing ServiceAccount": dev_case(lambda d: find(d, "Deployment")["spec"]["template"]["spec"].update(serviceAccountName="nobody")),
        "a ScaledObject naming a missing Deployment": k8s_case(lambda d: find(d, "ScaledObject")["spec"]["scaleTargetRef"].update(name="omsc-gone")),
        "a PodMonitor on a port the pods do not name": monitored_case(lambda d: find(d, "PodMonitor")["spec"]["podMetricsEndpoints"][0].update(port="metricz")),
        "a PodMonitor selecting no worker": monitored_case(lambda d: find(d, "PodMonitor")["spec"]["selector"]["matchLabels"].update({"app.kubernetes.io/name": "other"})),
        "a PodMonitor field the Operator does not know": monitored_case(lambda d: find(d, "PodMonitor")["spec"].update(scrapeEvery="30s")),
        "compose: an unknown key": compose_schema_case(lambda c: c["services"]["postgres"].update(restart_policy="always")),
        "compose: a module without a worker": compose_case(lambda c: c["services"].pop(next(n for n, s in c["services"].items() if s.get("entrypoint")))),
        "a registration secret in plain sight": k8s_case(lambda d: set_env(container(d), "OMSC_REGISTRATION_SECRET", "s3cret")),
        "a gateway without a bus": prod_with_gateway(),
        "a bus without the gateway": bus_case(lambda d: d.remove(named(d, "Deployment", "omsc-gateway"))),
        "a bus without a callback URL": bus_case(lambda d: bus_config(d).pop("OMSC_CALLBACK_URL")),
        "a gateway listening elsewhere than its http port": bus_case(lambda d: set_env(gateway_container(d), "OMSC_GATEWAY_ADDR", "0.0.0.0:9999")),
        "a gateway scaling on another queue": bus_case(lambda d: named(d, "ScaledObject", "omsc-gateway")["spec"]["triggers"][0]["metadata"].update(queueName="connector.inventory")),
        "a gateway Service without its http port": bus_case(lambda d: named(d, "Service", "omsc-gateway")["spec"]["ports"].pop()),
        "an Ingress on a port the Service lacks": bus_case(lambda d: named(d, "Ingress", "omsc-gateway")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"].update(name="metricz")),
        "an Ingress without TLS": bus_case(lambda d: named(d, "Ingress", "omsc-gateway")["spec"].pop("tls")),
        "no Ingress to the gateway": bus_case(lambda d: d.remove(named(d, "Ingress", "omsc-gateway"))),
        "a policy that keeps the bus's deliveries out": bus_case(lambda d: named(d, "NetworkPolicy", "omsc-gateway")["spec"]["ingress"][0]["ports"][0].update(port=9481)),
        "a policy that keeps the gateway from the bus": bus_case(lambda d: named(d, "NetworkPolicy", "omsc-gateway")["spec"].pop("egress")),
        "an OAuth secret in plain sight": bus_case(lambda d: set_env(gateway_container(d), "OMSC_OMS_OAUTH_CLIENT_SECRET", "s3cret")),
        "compose: a gateway without a profile": compose_case(lambda c: c["services"]["gateway"].pop("profiles")),
        "compose: a gateway publishing its metrics port": compose_case(lambda c: c["services"]["gateway"]["ports"].append("127.0.0.1:9464:9464")),
        "compose: a gateway without a bus": compose_case(lambda c: c["services"]["gateway"]["environment"].pop("OMSC_OMS_URL")),
        "Dockerfile: running as root": docker_case("USER 65532:65532", "USER root"),
        "Dockerfile: one stage": docker_case("FROM gcr.io/distroless/cc-debian12:nonroot AS runtime", "RUN true"),
        "Dockerfile: a binary left behind": docker_case("-name 'omsc*'", "-name 'omsc'"),
        "Dockerfile: an unlocked build": docker_case("--locked", ""),
    }
    if "-v" in sys.argv:
        for name, problems in cases.items():
            print(f"{name}: {problems[:2]}")
    missed = [name for name, problems in cases.items() if not problems]
    for name in missed:
        print(f"deploy-check self-test: {name} was NOT caught", file=sys.stderr)
    if not missed:
        print(f"deploy-check self-test: all {len(cases)} broken cases caught")
    return 1 if missed else 0


def main() -> int:
    if "--self-test" in sys.argv[1:]:
        return self_test()
    problems = check_all()
    for problem in problems:
        print(f"deploy-check: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
