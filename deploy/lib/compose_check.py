"""Lepus rules for deploy/compose.yaml that `docker-compose config` cannot know.

    python3 compose_check.py deploy/compose.yaml

The worker services must scale (`--scale worker=N`: no container_name, no host ports),
Prometheus must find the worker's replicas by DNS, every Lepus service of the `cluster`
profile must be given all three nodes, and every file the services mount must exist (a
missing one would be mounted as an empty directory). Exits 1 and names each problem.
"""

import os
import sys

import yaml


def main(path):
    base = os.path.dirname(os.path.abspath(path))
    with open(path, encoding="utf-8") as f:
        compose = yaml.safe_load(f)
    services = compose.get("services") or {}
    problems = []
    if "worker" not in services:
        problems.append("no `worker` service")
    for name in ("worker", "cluster-worker"):
        for key in ("container_name", "ports", "hostname"):
            if key in (services.get(name) or {}):
                problems.append(f"service {name} has {key}: it would not scale with --scale {name}=N")
    cluster_nodes = [n for n, s in services.items() if "cluster" in (s.get("profiles") or []) and "image" in s
                     and str(s["image"]).startswith("rabbitmq:")]
    for name, service in services.items():
        url = (service.get("environment") or {}).get("LEPUS_AMQP_URL", "")
        if "cluster" in (service.get("profiles") or []) and url:
            missing = [n for n in cluster_nodes if f"@{n}:" not in url]
            if missing:
                problems.append(f"service {name}: LEPUS_AMQP_URL does not name all three nodes (missing {', '.join(missing)})")
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/")) and not os.path.exists(os.path.join(base, source)):
                problems.append(f"service {name} mounts {source}, which does not exist")
    prometheus = os.path.join(base, "compose", "prometheus.yml")
    with open(prometheus, encoding="utf-8") as f:
        scrape = yaml.safe_load(f).get("scrape_configs") or []
    names = [n for job in scrape for sd in job.get("dns_sd_configs") or [] for n in sd.get("names") or []]
    if "worker" not in names:
        problems.append(f"{prometheus}: no dns_sd_configs for the worker service")
    for problem in problems:
        print(f"compose: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"{len(services)} services; workers scale; cluster services use all {len(cluster_nodes)} nodes; every mounted file exists")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
