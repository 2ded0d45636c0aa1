"""Validates the Kubernetes manifests of one or more kustomize directories.

    python3 k8s_check.py --schemas DIR --schedules FILE [--k8s-version V]... [--no-kubectl] \
        KUSTOMIZE_DIR...

For each directory: renders it (`kubectl kustomize` when kubectl is on PATH, else the files its
kustomization.yaml lists, without transformations), then
  - core kinds: the kubernetes-validate CLI (this Python's) with --strict, once per --k8s-version; a kind it has
    no schema for fails (it would only warn);
  - KEDA kinds (keda.sh/v1alpha1): the JSON schemas in --schemas (jsonschema);
  - references and Lepus rules: ScaledObject target and authentication, secret and config map
    references, worker stop timeout above LEPUS_GRACE_PERIOD, probes on /readyz and /livez,
    the schedules ConfigMap equal to --schedules.
Each failure is printed as `FAIL <stage>: <what>`; exit 1 if any.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import jsonschema
import yaml

KEDA_SCHEMAS = {
    "ScaledObject": "keda-scaledobject.schema.json",
    "TriggerAuthentication": "keda-triggerauthentication.schema.json",
}


class Report:
    def __init__(self):
        self.failures = []

    def fail(self, stage, what):
        self.failures.append(f"FAIL {stage}: {what}")


def load_docs(text, source):
    docs = []
    for doc in yaml.safe_load_all(text):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ValueError(f"{source}: a document is not a mapping")
        docs.append(doc)
    return docs


def render(directory, use_kubectl, report):
    """The directory's resources, as kustomize renders them."""
    kustomization = os.path.join(directory, "kustomization.yaml")
    with open(kustomization, encoding="utf-8") as f:
        kust = yaml.safe_load(f) or {}
    listed = kust.get("resources", [])
    # Every manifest beside kustomization.yaml should be in it (a forgotten file never deploys).
    for name in sorted(os.listdir(directory)):
        if name.endswith((".yaml", ".yml")) and name != "kustomization.yaml" and name not in listed:
            report.fail("kustomize", f"{directory}/{name} is not listed in kustomization.yaml")
    if use_kubectl:
        run = subprocess.run(["kubectl", "kustomize", directory], capture_output=True, text=True, check=False)
        if run.returncode != 0:
            report.fail("kustomize", f"kubectl kustomize {directory}: {run.stderr.strip()}")
            return []
        return load_docs(run.stdout, directory)
    docs = []
    for name in listed:
        path = os.path.join(directory, name)
        if os.path.isdir(path):
            docs += render(path, use_kubectl, report)
            continue
        with open(path, encoding="utf-8") as f:
            docs += load_docs(f.read(), path)
    return docs


def name_of(doc):
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


def validate_core(docs, versions, report):
    if not docs:
        return
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump_all(docs, f, sort_keys=False)
        path = f.name
    try:
        for version in versions:
            cmd = [sys.executable, "-m", "kubernetes_validate", "--strict"] + (["-k", version] if version else []) + [path]
            run = subprocess.run(cmd, capture_output=True, text=True, check=False)
            out = (run.stdout + run.stderr).replace(path, "<manifests>")
            lines = [line for line in out.splitlines() if line.strip()]
            bad = [line for line in lines if not line.startswith("INFO ")]
            if run.returncode != 0 or bad:
                for line in bad or lines:
                    report.fail(f"kubernetes-validate {version or 'default'}", line)
    finally:
        os.unlink(path)


def validate_keda(docs, schemas, report):
    for doc in docs:
        schema_file = KEDA_SCHEMAS.get(doc.get("kind"))
        if schema_file is None:
            report.fail("keda-schema", f"{name_of(doc)}: no schema for this KEDA kind")
            continue
        with open(os.path.join(schemas, schema_file), encoding="utf-8") as f:
            schema = json.load(f)
        validator = jsonschema.Draft202012Validator(schema)
        for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
            where = "/".join(str(p) for p in error.absolute_path) or "(top)"
            message = error.message if len(error.message) < 160 else error.message[:150] + " ..."
            report.fail("keda-schema", f"{name_of(doc)}: {where}: {message}")
        spec = doc.get("spec") or {}
        lo, hi = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
        if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
            report.fail("keda-schema", f"{name_of(doc)}: minReplicaCount {lo} > maxReplicaCount {hi}")


def seconds(duration):
    """`30s`, `2m`, `1m30s`, `500ms` -> seconds (humantime's common forms)."""
    total = 0.0
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)", duration)
    if not parts or "".join(n + u for n, u in parts) != duration.replace(" ", ""):
        raise ValueError(f"cannot read duration {duration!r}")
    for number, unit in parts:
        total += float(number) * units[unit]
    return total


def check_references(docs, schedules, report):
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc.get("kind"), {})[(doc.get("metadata") or {}).get("name")] = doc

    def secret_has(name, key):
        secret = by_kind.get("Secret", {}).get(name)
        if secret is None:
            return False
        return key in (secret.get("stringData") or {}) or key in (secret.get("data") or {})

    for so in by_kind.get("ScaledObject", {}).values():
        spec = so.get("spec") or {}
        target = (spec.get("scaleTargetRef") or {}).get("name")
        if target not in by_kind.get("Deployment", {}):
            report.fail("references", f"{name_of(so)}: scaleTargetRef {target!r} is no Deployment here")
        for trigger in spec.get("triggers") or []:
            auth = (trigger.get("authenticationRef") or {}).get("name")
            if auth and auth not in by_kind.get("TriggerAuthentication", {}):
                report.fail("references", f"{name_of(so)}: authenticationRef {auth!r} is no TriggerAuthentication here")
    for ta in by_kind.get("TriggerAuthentication", {}).values():
        for ref in (ta.get("spec") or {}).get("secretTargetRef") or []:
            if not secret_has(ref.get("name"), ref.get("key")):
                report.fail("references", f"{name_of(ta)}: Secret {ref.get('name')!r} has no key {ref.get('key')!r}")

    for kind in ("Deployment", "StatefulSet"):
        for workload in by_kind.get(kind, {}).values():
            pod = ((workload.get("spec") or {}).get("template") or {}).get("spec") or {}
            for volume in pod.get("volumes") or []:
                cm = (volume.get("configMap") or {}).get("name")
                if cm and cm not in by_kind.get("ConfigMap", {}):
                    report.fail("references", f"{name_of(workload)}: ConfigMap {cm!r} is not here")
            for container in pod.get("containers") or []:
                env = {e.get("name"): e for e in container.get("env") or []}
                for e in env.values():
                    ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                    if ref and not secret_has(ref.get("name"), ref.get("key")):
                        report.fail("references", f"{name_of(workload)}: Secret {ref.get('name')!r} has no key {ref.get('key')!r}")
                for src in container.get("envFrom") or []:
                    name = (src.get("secretRef") or {}).get("name")
                    if name and name not in by_kind.get("Secret", {}):
                        report.fail("references", f"{name_of(workload)}: Secret {name!r} is not here")
                if "LEPUS_METRICS_ADDR" not in env:
                    continue
                # A Lepus container: health endpoints and the SIGTERM drain.
                probes = {
                    "readinessProbe": "/readyz",
                    "livenessProbe": "/livez",
                }
                for probe, path in probes.items():
                    got = ((container.get(probe) or {}).get("httpGet") or {}).get("path")
                    if got != path:
                        report.fail("lepus", f"{name_of(workload)}: {probe} should GET {path}, not {got!r}")
                ports = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
                if ports.get("metrics") != 9464 or not env["LEPUS_METRICS_ADDR"].get("value", "").endswith(":9464"):
                    report.fail("lepus", f"{name_of(workload)}: metrics should listen on port 9464 (port `metrics`)")
                if "LEPUS_GRACE_PERIOD" in env:
                    grace = seconds(env["LEPUS_GRACE_PERIOD"].get("value", "30s"))
                    stop = pod.get("terminationGracePeriodSeconds", 30)
                    if not isinstance(stop, int) or stop <= grace:
                        report.fail("lepus", f"{name_of(workload)}: terminationGracePeriodSeconds {stop!r} "
                                    f"must be above LEPUS_GRACE_PERIOD ({grace:g}s)")

    cm = by_kind.get("ConfigMap", {}).get("lepus-schedules")
    if cm is not None:
        with open(schedules, encoding="utf-8") as f:
            wanted = f.read()
        if (cm.get("data") or {}).get("schedules.toml") != wanted:
            report.fail("lepus", f"ConfigMap lepus-schedules: schedules.toml differs from {schedules}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schemas", required=True)
    parser.add_argument("--schedules", required=True)
    parser.add_argument("--k8s-version", action="append", default=[])
    parser.add_argument("--no-kubectl", action="store_true")
    parser.add_argument("dirs", nargs="+")
    args = parser.parse_args()

    use_kubectl = not args.no_kubectl and shutil.which("kubectl") is not None
    report = Report()
    counts = {"core": 0, "keda": 0}
    for directory in args.dirs:
        try:
            docs = render(directory, use_kubectl, report)
        except (OSError, ValueError, yaml.YAMLError) as e:
            report.fail("kustomize", f"{directory}: {e}")
            continue
        keda = [d for d in docs if str(d.get("apiVersion", "")).startswith("keda.sh/")]
        core = [d for d in docs if d not in keda]
        counts["core"] += len(core)
        counts["keda"] += len(keda)
        validate_core(core, args.k8s_version or [""], report)
        validate_keda(keda, args.schemas, report)
        check_references(docs, args.schedules, report)

    for failure in report.failures:
        print(failure, file=sys.stderr)
    if report.failures:
        return 1
    how = "kubectl kustomize" if use_kubectl else "kustomization.yaml resources (no kubectl)"
    versions = ", ".join(args.k8s_version) or "default"
    print(f"{counts['core']} core resources (Kubernetes {versions}, strict) and "
          f"{counts['keda']} KEDA resources valid; rendered with {how}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
