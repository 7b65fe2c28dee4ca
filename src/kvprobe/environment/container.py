"""Are we in a container, which runtime, and the evidence weighed (no single file decides)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Optional

ORCHESTRATOR_VARIABLES = ("KUBERNETES_SERVICE_HOST", "container")


@dataclass
class ContainerFacts:
    detected: bool
    runtime: str  # docker, podman, containerd/kubernetes, unknown, none
    evidence: dict[str, object] = field(default_factory=dict)
    score: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def detect_container(root: str | Path = "/", environ: Optional[Mapping[str, str]] = None, pid: str = "self") -> ContainerFacts:
    """Weigh several signals. `root` lets tests point at a fake root; `pid` picks /proc/PID."""
    root = Path(root)
    environ = os.environ if environ is None else environ
    evidence: dict[str, object] = {}
    runtime_votes: list[str] = []
    score = 0

    if (root / "run/.containerenv").exists():
        evidence["/run/.containerenv"] = True
        runtime_votes.append("podman")
        score += 2
    if (root / ".dockerenv").exists():
        # This file also appears on hosts that were built from Docker images: weak on its own.
        evidence["/.dockerenv"] = True
        runtime_votes.append("docker")
        score += 1

    cgroup_text = _read(root / f"proc/{pid}/cgroup")
    paths = [line.split(":", 2)[2] for line in cgroup_text.splitlines() if line.count(":") >= 2]
    evidence["cgroup_paths"] = sorted(set(paths))[:6]
    for marker, name in (("docker", "docker"), ("libpod", "podman"), ("kubepods", "containerd/kubernetes"), ("containerd", "containerd/kubernetes")):
        if any(marker in p for p in paths):
            evidence[f"cgroup path mentions {marker}"] = True
            runtime_votes.append(name)
            score += 2

    own_ns = _namespace(root, pid, "cgroup")
    init_ns = _namespace(root, "1", "cgroup")
    if own_ns:
        evidence["cgroup_namespace"] = own_ns
    if paths and all(p == "/" for p in paths) and _has_limit(root):
        evidence["private cgroup namespace with a memory limit"] = True
        score += 1

    mounts = _read(root / f"proc/{pid}/mounts")
    root_mount = next((line.split() for line in mounts.splitlines() if len(line.split()) > 2 and line.split()[1] == "/"), None)
    if root_mount:
        evidence["root_filesystem"] = root_mount[2]
        if root_mount[2] == "overlay":
            score += 1

    for variable in ORCHESTRATOR_VARIABLES:
        if variable in environ:
            evidence[f"${variable}"] = environ[variable]
            score += 2
            if variable == "KUBERNETES_SERVICE_HOST":
                runtime_votes.append("containerd/kubernetes")
            elif environ[variable] in ("podman", "docker"):
                runtime_votes.append(environ[variable])

    detected = score >= 2
    runtime = "none"
    if detected:
        runtime = max(set(runtime_votes), key=runtime_votes.count) if runtime_votes else "unknown"
        if "podman" in runtime_votes:
            runtime = "podman"  # podman also writes docker-looking files; its own marker wins
    evidence["pid1_cgroup_namespace_differs"] = bool(own_ns and init_ns and own_ns != init_ns)
    return ContainerFacts(detected=detected, runtime=runtime, evidence=evidence, score=score)


def _namespace(root: Path, pid: str, kind: str) -> Optional[str]:
    try:
        return os.readlink(root / f"proc/{pid}/ns/{kind}")
    except OSError:
        return None


def _has_limit(root: Path) -> bool:
    for candidate in ("sys/fs/cgroup/memory.max", "sys/fs/cgroup/memory/memory.limit_in_bytes"):
        text = _read(root / candidate).strip()
        if text and text != "max" and text.isdigit() and int(text) < (1 << 62):
            return True
    return False


def label_disagreement(label: str, facts: ContainerFacts) -> Optional[str]:
    """A warning when the command line's label and the evidence disagree (the label still wins)."""
    if label == "container" and not facts.detected:
        return "labelled 'container' but no container evidence was found"
    if label == "native" and facts.detected:
        return f"labelled 'native' but the evidence points to a {facts.runtime} container"
    return None
