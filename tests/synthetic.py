"""Result documents made up from fixed numbers: the same report every time, for the writers' golden
files and for tests that need results without an engine. Every value here is chosen, none measured."""

from __future__ import annotations

from kvprobe.environment.container_detection import ContainerFacts
from kvprobe.environment.gpu import GpuReport
from kvprobe.environment.memory import CgroupMemory
from kvprobe.results.schema import (
    Attribution,
    AttributionParts,
    Environment,
    ExperimentRef,
    GuardSettings,
    KvFigure,
    KvPrediction,
    ResultDocument,
    RunOptions,
    SearchSummary,
    SoftwareVersions,
    ThroughputResult,
    TrialRecord,
)
from kvprobe.units import GIB, MIB

HOST = 24 * GIB
BLOCK_BYTES = 4 * MIB  # bytes per KV block of the made-up model
BLOCK_SIZE = 128
UNGUARDED = GuardSettings(host_floor_bytes=None, cgroup_floor_bytes=None)  # stand-in engines run under no guard


def environment(label: str, limit: int | None) -> Environment:
    return Environment(
        label=label,
        container=ContainerFacts(detected=limit is not None, runtime="podman" if limit else "none"),
        cgroup=CgroupMemory(version="v2", limit_bytes=limit),
        host_memory={"MemTotal": HOST},
        gpu=GpuReport(available=False, reason="synthetic"),
        software={"kvprobe": "0.2.0", "vllm": "0.32.0", "torch": "2.13.0+cpu", "cpu_model": "Synthetic CPU"},
    )


def kv(trial: int, utilization: float | None, blocks: int) -> KvFigure:
    tokens = blocks * BLOCK_SIZE
    return KvFigure(
        trial=trial,
        utilization=utilization,
        kv_cache_memory_bytes=None,
        num_blocks=blocks,
        block_size=BLOCK_SIZE,
        tokens=tokens,
        bytes=blocks * BLOCK_BYTES,
        bytes_per_block=BLOCK_BYTES,
        bytes_logged=round(blocks * BLOCK_BYTES / GIB, 2) * GIB,
        tokens_logged=tokens,
        max_concurrency=tokens / 4096,
        fill=None,
    )


def search(boundary: float, failing: float | None, trials: list[int]) -> SearchSummary:
    return SearchSummary(
        boundary=boundary,
        failing=failing,
        tolerance=0.01,
        converged=failing is not None,
        censored=failing is None,
        non_monotone=False,
        engine_starts=len(trials),
        trials=trials,
    )


def attribution(kv_bytes: int, limit: int | None) -> Attribution:
    cut = HOST - limit if limit else 0
    pool_left = HOST - cut - kv_bytes - GIB
    parts = AttributionParts(
        kv_cache=kv_bytes,
        other_engine=0.75 * GIB,
        engine_beyond_request=0.25 * GIB,
        cgroup_cut=cut,
        free_at_ready=pool_left - 64 * MIB,
    )
    explained = sum(parts.model_dump().values())
    return Attribution(
        pool="host",
        total_bytes=HOST,
        utilization=None,
        engine_measured_bytes=kv_bytes + GIB,
        engine_requested_bytes=kv_bytes + 0.75 * GIB,
        parts=parts,
        unexplained_bytes=HOST - explained,
        unexplained_fraction=(HOST - explained) / HOST,
    )


def document(
    model: str, label: str, repeat: int, reference_blocks: int, u_max: float, u_max_blocks: int, tokens_per_s: float
) -> ResultDocument:
    limit = 4 * GIB if label == "container" else None
    return ResultDocument(
        run_id=f"{label}-run",
        repeat=repeat,
        label=label,
        condition=label,
        model=model,
        model_path=f"/models/{model}",
        settings={"max_model_len": 4096},
        settings_hash="0123456789abcdef",
        started_at=0.0,
        finished_at=60.0,
        versions=SoftwareVersions(kvprobe="0.2.0", vllm="0.32.0", torch="2.13.0+cpu"),
        device="CPU: Synthetic CPU",
        environment=environment(label, limit),
        options=RunOptions(
            tolerance=0.01,
            utilization_range=(0.05, 0.99),
            fill_target=0.95,
            drop_caches=False,
            cooldown_s=0.0,
            guard=GuardSettings(host_floor_bytes=2 * GIB, cgroup_floor_bytes=None),
            searches=["reference", "u_max", "u_min"],
            strategy="bracketed",
        ),
        reference=kv(1, 0.2, reference_blocks),
        searches={"u_max": search(u_max, round(u_max + 0.01, 2), [2, 3]), "u_min": search(0.04, 0.03, [4])},
        u_max=u_max,
        u_min=0.04,
        kv_at_u_max=kv(2, u_max, u_max_blocks),
        attribution=attribution(u_max_blocks * BLOCK_BYTES, limit),
        throughput=ThroughputResult(
            requests=16, prompt_len=64, output_len=64, output_tokens=1024, seconds=1.0, tokens_per_s=tokens_per_s
        ),
        prediction=KvPrediction(
            bytes_per_token=BLOCK_BYTES // BLOCK_SIZE,
            bytes_per_block=BLOCK_BYTES,
            weight_bytes=0.25 * GIB,
            attention="8 full",
        ),
        engine_starts=4,
        status="complete",
    )


def documents(model: str = "demo-model") -> list[ResultDocument]:
    """Three native and three container repeats of one model, with a little spread between repeats."""
    native = [document(model, "native", r, 700 + r, 0.9, 4000 + 10 * r, 360.0 + 5 * r) for r in (1, 2, 3)]
    container = [document(model, "container", r, 35, 0.69, 537 - r, 362.0 + 3 * r) for r in (1, 2, 3)]
    return native + container


def trial(**changes) -> TrialRecord:
    """A passing manual trial at u = 0.2, with `changes` applied."""
    fields = {
        "number": 1,
        "search": "manual",
        "utilization": 0.2,
        "kv_cache_memory_bytes": None,
        "fill_target": None,
        "outcome": "ok",
        "reason": "",
        "returncode": 0,
        "started_at": 0,
        "wall_s": 1,
        "teardown_s": 0,
        "baseline_restored": True,
    }
    return TrialRecord(**{**fields, **changes})


def experiment_documents(model: str = "demo-model") -> list[ResultDocument]:
    """An experiment: a baseline, the container condition it explains, one condition that reproduces
    most of that loss (a hidden limit) and one that changes nothing (page cache), three repeats each."""
    reference = ExperimentRef(
        name="demo", baseline="native", explains="container", conditions=["native", "container", "hidden", "cache"]
    )
    reference_blocks = {"native": 700, "container": 35, "hidden": 70, "cache": 700}
    made = []
    for condition, base in reference_blocks.items():
        label = "container" if condition == "container" else "native"
        for repeat in (1, 2, 3):
            doc = document(model, label, repeat, base + repeat, 0.9, 4000 + 10 * repeat, 360.0)
            made.append(
                doc.model_copy(update={"condition": condition, "experiment": reference, "run_id": f"{condition}-run"})
            )
    return made
