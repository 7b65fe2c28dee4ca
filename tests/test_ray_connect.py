"""`--ray-address` to a cluster that never answers: kvprobe gives up with a sentence (exit 2's
ClusterError) instead of waiting as long as Ray's client retries. Ray itself is stood in for by a
module whose `init` blocks (as Ray's did on the GPU host, retrying a GCS address it could not reach:
docs/multinode/h200x2-2026-11-30/raw/earlier-attempts/) or fails at once."""

from __future__ import annotations

import sys
import threading
import time
import types

import pytest

from kvprobe.cluster import ray_cluster
from kvprobe.cluster.ray_cluster import ClusterError, RayCluster
from kvprobe.errors import InputError


def standin_ray(monkeypatch, init) -> None:
    ray = types.ModuleType("ray")
    ray.init = init  # type: ignore[attr-defined]
    strategies = types.ModuleType("ray.util.scheduling_strategies")
    strategies.NodeAffinitySchedulingStrategy = object  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ray", ray)
    monkeypatch.setitem(sys.modules, "ray.util", types.ModuleType("ray.util"))
    monkeypatch.setitem(sys.modules, "ray.util.scheduling_strategies", strategies)


def test_a_cluster_that_never_answers_is_given_up_on(monkeypatch):
    never = threading.Event()
    standin_ray(monkeypatch, lambda **_: never.wait())
    monkeypatch.setattr(ray_cluster, "CONNECT_TIMEOUT_S", 0.5)
    started = time.monotonic()
    with pytest.raises(ClusterError, match=r"no answer from the cluster within 0.5 s.*can this machine reach it"):
        RayCluster("10.0.0.9:6379", guard=True, floor_bytes=None)
    assert time.monotonic() - started < 5
    assert issubclass(ClusterError, InputError)  # exit 2, one sentence
    never.set()


def test_a_refused_connection_is_said_at_once(monkeypatch):
    def refuse(**_):
        raise ConnectionError("Could not find any running Ray instance")

    standin_ray(monkeypatch, refuse)
    with pytest.raises(ClusterError, match="cannot connect: Could not find any running Ray instance"):
        RayCluster("127.0.0.1:1", guard=True, floor_bytes=None)
