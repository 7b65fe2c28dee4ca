"""Are we in a container, which runtime, and the evidence weighed (no single file decides)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kvprobe.environment.memory import read_text_or_none
from kvprobe.results.schema import ContainerFacts

ORCHESTRATOR_VARIABLES = ("KUBERNETES_SERVICE_HOST", "container")


@dataclass
class _Weighing:
    """Evidence as it is found, the score it adds up to, and each signal's vote for a runtime."""

    evidence: dict[str, object] = field(default_factory=dict)
    votes: list[str] = field(default_factory=list)
    score: int = 0

    def add(self, key: str, value: object, score: int, vote: str | None = None) -> None:
        self.evidence[key] = value
        self.score += score
        if vote:
            self.votes.append(vote)

    def runtime(self) -> str:
        if self.score < 2:
            return "none"
        if "podman" in self.votes:
            return "podman"  # podman also writes docker-looking files; its own marker wins
        return max(set(self.votes), key=self.votes.count) if self.votes else "unknown"


CGROUP_MARKERS = (
    ("docker", "docker"),
    ("libpod", "podman"),
    ("kubepods", "containerd/kubernetes"),
    ("containerd", "containerd/kubernetes"),
)


def _marker_files(root: Path, weighing: _Weighing) -> None:
    if (root / "run/.containerenv").exists():
        weighing.add("/run/.containerenv", True, 2, "podman")
    if (root / ".dockerenv").exists():
        # This file also appears on hosts that were built from Docker images: weak on its own.
        weighing.add("/.dockerenv", True, 1, "docker")


def _cgroup_paths(root: Path, pid: str, weighing: _Weighing) -> list[str]:
    cgroup_text = read_text_or_none(root / f"proc/{pid}/cgroup") or ""
    paths = [line.split(":", 2)[2] for line in cgroup_text.splitlines() if line.count(":") >= 2]
    weighing.add("cgroup_paths", sorted(set(paths))[:6], 0)
    for marker, name in CGROUP_MARKERS:
        if any(marker in p for p in paths):
            weighing.add(f"cgroup path mentions {marker}", True, 2, name)
    return paths


def _root_filesystem(root: Path, pid: str, weighing: _Weighing) -> None:
    mounts = read_text_or_none(root / f"proc/{pid}/mounts") or ""
    fields = next(
        (line.split() for line in mounts.splitlines() if len(line.split()) > 2 and line.split()[1] == "/"), None
    )
    if fields:
        weighing.add("root_filesystem", fields[2], 1 if fields[2] == "overlay" else 0)


def _orchestrator(environ: Mapping[str, str], weighing: _Weighing) -> None:
    for variable in ORCHESTRATOR_VARIABLES:
        if variable in environ:
            value = environ[variable]
            vote: str | None
            if variable == "KUBERNETES_SERVICE_HOST":
                vote = "containerd/kubernetes"
            else:
                vote = value if value in ("podman", "docker") else None
            weighing.add(f"${variable}", value, 2, vote)


def detect_container(
    root: str | Path = "/", environ: Mapping[str, str] | None = None, pid: str = "self"
) -> ContainerFacts:
    """Weigh several signals. `root` lets tests point at a fake root; `pid` picks /proc/PID."""
    root = Path(root)
    environ = os.environ if environ is None else environ
    weighing = _Weighing()
    _marker_files(root, weighing)
    paths = _cgroup_paths(root, pid, weighing)
    own_ns, init_ns = _namespace(root, pid, "cgroup"), _namespace(root, "1", "cgroup")
    if own_ns:
        weighing.add("cgroup_namespace", own_ns, 0)
    if paths and all(p == "/" for p in paths) and _has_limit(root):
        weighing.add("private cgroup namespace with a memory limit", True, 1)
    _root_filesystem(root, pid, weighing)
    _orchestrator(environ, weighing)
    weighing.add("pid1_cgroup_namespace_differs", bool(own_ns and init_ns and own_ns != init_ns), 0)
    runtime = weighing.runtime()
    return ContainerFacts(detected=runtime != "none", runtime=runtime, evidence=weighing.evidence, score=weighing.score)


def _namespace(root: Path, pid: str, kind: str) -> str | None:
    try:
        return os.readlink(root / f"proc/{pid}/ns/{kind}")
    except OSError:
        return None


def _has_limit(root: Path) -> bool:
    for candidate in ("sys/fs/cgroup/memory.max", "sys/fs/cgroup/memory/memory.limit_in_bytes"):
        text = (read_text_or_none(root / candidate) or "").strip()
        if text and text != "max" and text.isdigit() and int(text) < (1 << 62):
            return True
    return False


def label_disagreement(label: str, facts: ContainerFacts) -> str | None:
    """A warning when the command line's label and the evidence disagree (the label still wins)."""
    if label == "container" and not facts.detected:
        return "labelled 'container' but no container evidence was found"
    if label == "native" and facts.detected:
        return f"labelled 'native' but the evidence points to a {facts.runtime} container"
    return None
