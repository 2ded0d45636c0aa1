"""Lepus rules for deploy/compose.yaml that `docker-compose config` cannot know.

    python3 compose_check.py deploy/compose.yaml

The worker service must scale (`--scale worker=N`: no container_name, no host ports),
Prometheus must find its replicas by DNS, and every file the services mount must exist
(a missing one would be mounted as an empty directory). Exits 1 and names each problem.
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
    worker = services.get("worker")
    if worker is None:
        problems.append("no `worker` service")
    else:
        for key in ("container_name", "ports", "hostname"):
            if key in worker:
                problems.append(f"service worker has {key}: it would not scale with --scale worker=N")
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
    print(f"{len(services)} services; worker scales; every mounted file exists")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
