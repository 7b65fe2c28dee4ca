"""The result document, typed: one `ResultDocument` per model, repeat and run, and its trials.

The same classes write a result and read it back. Files written by older kvprobe versions come
in through `kvprobe.results.loader`, which upgrades them to this schema. Byte counts are
integers where kvprobe counted them and floats where the engine logged GiB figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kvprobe.units import Bytes
from kvprobe.vocabulary import KvApproach, Label, MemoryKind, Outcome, Pool, SearchName, Status, Strategy

SCHEMA_VERSION: Final = 4


# --- machine facts, as kvprobe.environment reads them -------------------------------------------


@dataclass
class ContainerFacts:
    detected: bool
    runtime: str  # docker, podman, containerd/kubernetes, unknown, none
    evidence: dict[str, object] = field(default_factory=dict)
    score: int = 0


@dataclass
class GpuInfo:
    index: int  # the engine's device number (cuda:index), under CUDA_VISIBLE_DEVICES
    name: str
    total_bytes: int | None
    used_bytes: int | None
    unified_memory: bool
    unified_memory_signal: str
    processes: list[dict] = field(default_factory=list)  # pid, used_bytes
    nvml_index: int | None = None  # NVML's number for it; None in results made before it was recorded
    uuid: str | None = None


@dataclass
class GpuReport:
    """What NVML says of this machine's GPUs (`reason` says why nothing, where it cannot)."""

    available: bool
    devices: list[GpuInfo] = field(default_factory=list)
    reason: str | None = None
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    cuda_visible_devices: str | None = None  # the variable as the engine read it; None: unset (every device)
    not_visible: list[int] = field(default_factory=list)  # NVML indices of the machine's GPUs the engine cannot use
    visibility_note: str | None = None  # why entries of the variable were left out


def headroom(limit: float | None, usage: float | None) -> float | None:
    """What a cgroup can still take before its limit (None without a limit)."""
    if limit is None or usage is None:
        return None
    return limit - usage


@dataclass
class CgroupMemory:
    """The memory cgroup this process runs in, as its own files describe it."""

    version: str  # "v1", "v2", "hybrid" or "none"
    path: str | None = None  # the cgroup's directory as read
    limit_bytes: int | None = None
    usage_bytes: int | None = None
    peak_bytes: int | None = None
    stat: dict[str, int] = field(default_factory=dict)  # anon, file, shmem, kernel (bytes)

    def headroom_bytes(self) -> float | None:
        return headroom(self.limit_bytes, self.usage_bytes)


@dataclass
class NumaNode:
    """One NUMA node as /sys/devices/system/node/nodeN describes it."""

    node: int
    mem_total_bytes: int | None
    mem_free_bytes: int | None
    cpus: str  # the cpulist, "" for a node without CPUs


@dataclass
class MemoryModel:
    kind: MemoryKind
    signal: str  # what decided it, in words
    gpu_nodes: list[int]  # NUMA nodes holding GPU memory (coherent_numa)

    @property
    def gpu_memory_is_host_memory(self) -> bool:
        """GPU allocations come from memory the kernel also hands to processes (unified, or HBM
        onlined as a NUMA node): the guard then watches the lower of MemAvailable and MemFree."""
        return self.kind in ("unified", "coherent_numa")


BoundaryKind = Literal["engine-refused", "engine-oom", "killed", "guard", "top-of-range", "other"]
"""What set a utilization search's boundary, from the outcome of the failing start above it:
engine-refused (the engine's own startup check), engine-oom (it ran out of memory), killed (ended by a
signal, e.g. the kernel's OOM killer), guard (kvprobe's guard stopped it: kvprobe's boundary, not the
engine's), top-of-range (nothing failed: the boundary is only a lower bound), other (timeout, error)."""
BOUNDARY_OF_OUTCOME: dict[Outcome, BoundaryKind] = {
    "startup-check": "engine-refused",
    "kv-too-small": "engine-refused",
    "oom": "engine-oom",
    "killed": "killed",
    "guard": "guard",
}


class Record(BaseModel):
    """Base of every part of a result: unknown keys are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


# --- one trial ------------------------------------------------------------------------------------


class MemorySample(Record):
    """Host, cgroup and GPU memory at one instant (10 Hz during a trial). Absent where not readable."""

    t: float = 0.0
    host_available: Bytes | None = None
    page_cache: Bytes | None = None
    cgroup_usage: Bytes | None = None
    cgroup_limit: Bytes | None = None
    gpu_used: Bytes | None = Field(None, description="Summed over visible devices; None where NVML cannot tell.")
    gpu_used_devices: list[Bytes | None] | None = Field(None, description="Per device (tensor parallelism).")
    host_unaccounted: Bytes | None = Field(None, description="See environment.memory.kernel_unaccounted.")
    host_free: Bytes | None = Field(None, description="MemFree: what GB10's CUDA free memory is reported to track.")
    node_free: dict[str, Bytes] | None = Field(None, description="MemFree per NUMA node.")
    cuda_free: Bytes | None = Field(None, description="CUDA's free memory, from inside the trial at this phase.")
    shmem: Bytes | None = Field(None, description="Shmem (/proc/meminfo): tmpfs and shared memory, inside Cached.")
    device_free: list[Bytes | None] | None = Field(
        None, description="NVML free memory per device (discrete GPUs; None where NVML cannot tell)."
    )

    @property
    def host_released(self) -> Bytes:
        """MemAvailable plus the kernel's unlisted pages: what no process holds. Freed pages can sit
        unlisted for tens of seconds on free-page-reporting VMs before MemAvailable sees them."""
        return (self.host_available or 0) + (self.host_unaccounted or 0)

    @property
    def cgroup_headroom(self) -> Bytes | None:
        return headroom(self.cgroup_limit, self.cgroup_usage)


class TrialBaseline(MemorySample):
    """The sample taken just before a trial started, and the page cache charged to our cgroup then."""

    cgroup_file_bytes: Bytes | None = None


class GpuProcess(Record):
    index: int = 0
    pid: int
    used_bytes: Bytes | None = None


class EngineAtReady(Record):
    """The engine's processes measured by kvprobe once the engine was ready."""

    pss_bytes: Bytes | None = None
    private_bytes: Bytes | None = Field(None, description="Anonymous and shared-memory pages, by PSS.")
    file_bytes: Bytes | None = None
    processes: int | None = None
    pids: list[int] = Field(default_factory=list)
    gpu_processes: list[GpuProcess] = Field(default_factory=list)
    cgroup_file_bytes: Bytes | None = None


class TrialMemory(Record):
    """Phase samples of one trial and their extremes."""

    start: MemorySample | None = None
    phases: dict[str, MemorySample] = Field(default_factory=dict)
    lowest_host_available: Bytes | None = None
    lowest_host_released: Bytes | None = Field(None, description="Lowest MemAvailable + unlisted pages.")
    peak_cgroup_usage: Bytes | None = None
    peak_gpu_used: Bytes | None = Field(None, description="Summed over devices, by NVML.")
    peak_page_cache: Bytes | None = None
    count: int | None = Field(None, description="Samples taken.")
    rate_hz: float | None = None
    engine_at_ready: EngineAtReady | None = None
    probe_gpu_bytes: Bytes = 0


class EngineMemoryReport(Record):
    """The engine's own memory figures, from its log (vLLM logs GiB with two decimals)."""

    weights_bytes: Bytes | None = None
    kv_cache_bytes: Bytes | None = None
    non_kv_bytes: Bytes | None = None
    activation_peak_bytes: Bytes | None = None
    non_torch_bytes: Bytes | None = None
    free_at_start_bytes: Bytes | None = None
    requested_bytes: Bytes | None = None
    budget_total_bytes: Bytes | None = Field(None, description="What gpu_memory_utilization multiplies.")
    available_bytes: Bytes | None = Field(None, description="Free memory named by a refused start-up check.")
    kv_cache_tokens_logged: int | None = None
    max_concurrency_logged: float | None = None
    cudagraph_estimate_bytes: Bytes | None = Field(
        None, description="vLLM: the CUDA graph estimate it took from the KV budget, where it logged the figure."
    )
    cudagraph_estimate_applied: bool | None = Field(
        None,
        description="vLLM: whether its log says it took a CUDA graph estimate from the KV budget (None: no such "
        "line, or a result made before kvprobe read it).",
    )
    peak_bytes: Bytes | None = Field(
        None,
        description="TensorRT-LLM: peak memory of its profiling run, torch + non-torch (everything in use on "
        "the device, other processes' memory included).",
    )
    device_total_bytes: Bytes | None = Field(None, description="TensorRT-LLM: the device total it sized against.")
    temporary_kv_bytes: Bytes | None = Field(
        None, description="TensorRT-LLM: the profiling run's own KV cache, added back when sizing."
    )
    free_at_sizing_bytes: Bytes | None = Field(
        None, description="TensorRT-LLM's C++ KV manager: cudaMemGetInfo free + pool free when it sized the cache."
    )
    kv_estimate_bytes: Bytes | None = Field(
        None,
        description="TensorRT-LLM: its equation's KV budget before the max_tokens and max_gpu_total_bytes caps.",
    )
    kv_fraction_logged: float | None = Field(
        None, description="TensorRT-LLM: free_gpu_memory_fraction as it printed it (a fraction of FREE memory)."
    )
    kv_bytes_per_token: int | None = Field(None, description="TensorRT-LLM: KV bytes per token it printed.")
    kv_blocks_logged: int | None = Field(None, description="TensorRT-LLM: blocks in its KV cache's primary pool.")
    tokens_per_block_logged: int | None = Field(None, description="TensorRT-LLM: tokens per KV block it printed.")
    prefetched_checkpoint_bytes: Bytes | None = Field(
        None,
        description="TensorRT-LLM: checkpoint bytes its weight loader read into the page cache before loading "
        "(printed to 2 decimals of GiB, labelled GB).",
    )


class FillResult(Record):
    """The fill test: requests that occupy the KV cache at once, and the scheduler's peak usage."""

    requests: int
    prompt_len: int
    output_len: int
    capacity_tokens: int
    reachable_fraction: float
    seconds: float
    peak_kv_usage: float = Field(description="The scheduler's highest KV usage, polled by kvprobe's stat logger.")
    peak_running: int
    peak_kv_usage_logged: float | None = Field(
        None, description="The highest 'KV cache usage' vLLM's own stat logger printed (sampled, so at most the peak)."
    )
    stopped_full: bool = Field(
        False,
        description="The requests were aborted once the cache had stayed full (requests waiting, no new peak) "
        "for a few steps; earlier versions ran every request to its end.",
    )


class ThroughputResult(Record):
    """A fixed decode workload at u_max; `error` instead when that start failed."""

    requests: int | None = Field(None, description="Requests submitted at once.")
    prompt_len: int | None = Field(None, description="Prompt tokens per request (random token ids).")
    output_len: int | None = Field(None, description="Tokens each request generates (ignore_eos).")
    output_tokens: int | None = Field(None, description="Tokens generated in all.")
    seconds: float | None = Field(None, description="Wall time of the timed batch (after a warm-up request).")
    tokens_per_s: float | None = Field(None, ge=0)
    error: str | None = Field(None, description="Why the throughput start failed.")


class CudaView(Record):
    """CUDA's own view of device memory, taken inside the trial (the probe never creates a context)."""

    free_bytes: int | None = Field(None, description="torch.cuda.mem_get_info() free, after the workload.")
    total_bytes: int | None = None
    device_name: str | None = None
    error: str | None = Field(None, description="The CUDA error, where reading it failed.")


class EnginePreparation(Record):
    """What a prestarted worker did while it waited, beyond importing vLLM: the engine's own lazy
    imports (its worker class and the model class), found through a config built like the trial
    running then. None of it may touch CUDA: `cuda_initialized` says whether it did."""

    like: str = Field(description="The spec file of the trial whose engine arguments the preparation used.")
    seconds: float
    steps: list[str] = Field(default_factory=list, description="The steps that completed, in order.")
    error: str | None = Field(None, description="Why a step failed (the trial then went on unprepared from there).")
    cuda_initialized: bool = Field(description="torch.cuda.is_initialized() after the preparation.")


class SoftwareVersions(Record):
    """Versions as the engine's own process reported them (kvprobe's from the probe)."""

    kvprobe: str | None = None
    vllm: str | None = None
    tensorrt_llm: str | None = Field(None, description="Where the engine is TensorRT-LLM.")
    torch: str | None = None
    cuda_runtime: str | None = None


class WorkerResult(Record):
    """What the worker process wrote after a successful start (empty when it failed)."""

    num_gpu_blocks: int | None = Field(None, description="KV blocks allocated (vLLM's cache_config.num_gpu_blocks).")
    bytes_per_block: int | None = Field(
        None, description="2 (K and V) x layers x KV heads x head size x dtype bytes x block size, per rank."
    )
    block_size: int | None = Field(None, description="Tokens per KV block.")
    max_num_seqs: int | None = Field(None, description="The scheduler's limit on concurrent sequences.")
    max_num_batched_tokens: int | None = Field(None, description="Tokens per step; it sizes the activation peak.")
    timings: dict[str, float] = Field(default_factory=dict, description="Seconds: import_s, engine_start_s, ...")
    versions: SoftwareVersions = Field(default_factory=SoftwareVersions)
    fill: FillResult | None = None
    throughput: ThroughputResult | None = None
    cuda: CudaView | None = None
    prepared: EnginePreparation | None = Field(None, description="A prestarted worker's preparation while it waited.")
    ready_gate_expired: bool = Field(
        False, description="The worker stopped waiting for the probe at ready (a stalled or vanished probe)."
    )


class Perturbation(Record):
    """What a condition did to the machine around one engine start, as measured (kvprobe.measure.perturb)."""

    caches_dropped: bool = False
    page_cache_requested_bytes: int | None = None
    page_cache_rise_bytes: int | None = Field(None, description="Cached after reading the file minus before.")
    hold_requested_bytes: int | None = None
    helper_pid: int | None = None
    helper_rss_bytes: int | None = Field(None, description="The holding helper's resident memory before the start.")
    cgroup_limit_bytes: int | None = Field(None, description="The limit of the cgroup the run was placed in.")


class NodeTrial(Record):
    """One Ray node during one trial, as the kvprobe agent on that node saw it."""

    node_id: str
    hostname: str
    baseline: TrialBaseline
    memory: TrialMemory = Field(description="That node's samples; its `ready` phase is taken with the processes.")
    engine_at_ready: EngineAtReady | None = Field(None, description="The trial's processes on this node at ready.")
    same_host_other_nodes_bytes: float = Field(
        0.0, description="The trial's processes of other Ray nodes on this host at ready (nodes sharing a machine)."
    )
    process_titles: list[str] = Field(
        default_factory=list, description="The trial's processes here, by title (Ray workers: one actor per rank)."
    )
    guard_breach: str | None = Field(None, description="Why the agent ended the trial's processes here, if it did.")
    leftovers_ended: int = Field(0, description="Trial processes still alive after the driver ended, ended here.")
    baseline_restored: bool = False


class TrialRecord(Record):
    """One engine start: what was asked, how it ended, and what memory did meanwhile."""

    number: int
    search: SearchName
    utilization: float | None
    kv_cache_memory_bytes: int | None
    fill_target: float | None
    confirmation: int = Field(0, description="1: the boundary's setting started again to confirm it.")
    outcome: Outcome
    reason: str
    returncode: int | None
    started_at: float
    wall_s: float
    teardown_s: float = Field(description="From the end of the trial until the group is gone and memory is back.")
    baseline_restored: bool
    prestarted: bool = Field(False, description="Its worker was started (and imported) during the previous trial.")
    waiting_worker_pid: int | None = Field(None, description="The next trial's worker, waiting during this one.")
    kill_s: float = Field(0.0, description="The part of teardown until no process of the group was left.")
    largest_sample_gap_s: float | None = Field(
        None, description="The longest time between two memory samples (10 Hz): seconds mean the probe stalled."
    )
    passed: bool = Field(False, description="ok, and the fill test (if any) reached its target.")
    num_gpu_blocks: int | None = None
    block_size: int | None = None
    kv_cache_tokens: int | None = None
    kv_cache_bytes: int | None = Field(None, description="num_gpu_blocks x bytes_per_block where that is known.")
    bytes_per_block: int | None = Field(None, description="KV bytes per block, from the engine's model config.")
    memory_report: EngineMemoryReport = Field(default_factory=EngineMemoryReport)
    worker: WorkerResult = Field(default_factory=WorkerResult)
    memory: TrialMemory = Field(default_factory=TrialMemory)
    baseline: TrialBaseline = Field(default_factory=TrialBaseline)
    log_tail: list[str] = Field(default_factory=list)
    log_path: str | None = None
    perturbation: Perturbation | None = Field(None, description="What the condition did around this start.")
    nodes: list[NodeTrial] = Field(default_factory=list, description="Per Ray node (multi-node runs only).")

    @property
    def is_utilization_start(self) -> bool:
        """Started at a gpu_memory_utilization (not an explicit KV budget)."""
        return self.utilization is not None and self.kv_cache_memory_bytes is None


# --- the environment ------------------------------------------------------------------------------


class ContainerSettings(Record):
    """The `kvprobe container` flags a condition runs under (see that command's help).

    The isolation fields name one feature each, so an isolation ladder can add them one at a time:
    `cgroup` (a cgroup of its own, or podman's --cgroups=disabled), `cgroupns`, `pid`, `network`,
    `ipc` (with `shm_size` when private), `seccomp`, `privileged`, `memory` (needs a cgroup of its own).
    None leaves the runtime's default, and the command shows no flag for it.
    """

    runtime: Literal["docker", "podman"] = "podman"
    image: str | None = None
    rootfs: str | None = None
    memory: str | None = Field(None, description="--memory: the container's cgroup limit (needs cgroup: own).")
    shm_size: str = Field("60g", description="The size of a private /dev/shm (ipc: private).")
    ipc_host: bool = Field(True, description="--ipc host; false: a private IPC namespace with shm_size.")
    ipc: Literal["host", "private"] | None = Field(
        None, description="The same as ipc_host, spelled as the ladder does; given, it decides ipc_host."
    )
    gpus: str = "auto"
    memlock: str = "-1"
    stack: str = "67108864"
    network: str = Field("none", description="--network: host shares the host's network namespace.")
    pid: Literal["host", "private"] | None = Field(None, description="--pid host, or the runtime's own namespace.")
    cgroup: Literal["own", "disabled"] | None = Field(
        None, description="disabled: podman --cgroups=disabled, the host's cgroup; own: the runtime's default."
    )
    cgroupns: Literal["host", "private"] | None = Field(None, description="--cgroupns: whose cgroup tree it sees.")
    cgroup_parent: str | None = Field(None, description="--cgroup-parent: where the container's cgroup is made.")
    seccomp: Literal["default", "unconfined"] | None = Field(
        None, description="unconfined: --security-opt seccomp=unconfined."
    )
    privileged: bool = Field(False, description="--privileged.")
    native_side: Literal["host", "image"] = Field(
        "host",
        description="Where this container's native counterpart runs: the host's own install (its kvprobe, vLLM and "
        "torch must equal the container's), or a chroot of the same image (equal by construction); with --both, "
        "the native half runs there.",
    )
    oci_runtime: str | None = None
    python: str | None = None
    runtime_flags: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _ipc_decides(self) -> ContainerSettings:
        if self.ipc is not None and "ipc_host" not in self.model_fields_set:
            self.ipc_host = self.ipc == "host"
        return self


class NativeFromImage(Record):
    """The native side run from a container image's root filesystem: a chroot in the host's namespaces
    and cgroup (exported once per image digest into `rootfs_cache`), or a directory tree (`rootfs`)."""

    runtime: Literal["docker", "podman"] = "podman"
    image: str | None = Field(None, description="The image whose root filesystem is exported.")
    rootfs: str | None = Field(None, description="A root filesystem directory used as it is, instead of an image.")
    rootfs_cache: str = Field(
        "/var/cache/kvprobe/rootfs", description="Where exported root filesystems are kept, one per image digest."
    )
    python: str | None = Field(None, description="Python inside the tree (default: the tree's `kvprobe`).")


class Condition(Record):
    """Where a run happens and what is done to the machine around each engine start (issue 14).

    Plain `kvprobe measure` and `kvprobe container` runs are the conditions `native` and `container`
    with nothing done around the starts.
    """

    name: str
    container: ContainerSettings | None = Field(None, description="None: natively, on this machine.")
    page_cache_bytes: int | None = Field(None, description="A file this large is read into the page cache first.")
    hold_memory_bytes: int | None = Field(None, description="A helper holds this much anonymous memory meanwhile.")
    drop_caches: bool = Field(False, description="The page cache is dropped before each start (root).")
    cgroup_limit_bytes: int | None = Field(
        None, description="The run is placed in a memory cgroup this large, without a cgroup namespace of its own."
    )
    weights: Literal["real", "dummy"] | None = Field(None, description="None: as the models file says.")
    weights_dir: str | None = Field(
        None, description="With weights: real, the directory of the weight files; {model} stands for the model's name."
    )
    native_from_image: NativeFromImage | None = Field(
        None, description="Natively, but in a chroot of this image's root filesystem (no container isolation)."
    )

    @property
    def where(self) -> Label:
        return "native" if self.container is None else "container"

    @property
    def perturbs(self) -> bool:
        """Something is done around each start (or to the run's cgroup) that a trial must record."""
        return bool(self.page_cache_bytes or self.hold_memory_bytes or self.drop_caches or self.cgroup_limit_bytes)


SizingEquation = Literal["vllm-cpu", "vllm-cuda", "vllm-integrated", "explicit", "trtllm"]


class SizingCheck(Record):
    """One trial's KV cache against its engine's sizing equation (engines.sizing), computed from the
    inputs at the sizing moment. Residual = the engine's KV - the prediction."""

    trial: int = Field(description="The trial's number.")
    equation: SizingEquation = Field(description="Which engine path's equation (engines.sizing).")
    formula: str | None = Field(None, description="The equation with its numbers, where every input was known.")
    moment: str | None = Field(None, description="The phase sample taken as the sizing moment (sizing.SIZING_MOMENT).")
    inputs: dict[str, float] = Field(
        default_factory=dict, description="The equation's inputs by field name: bytes (utilization: a fraction)."
    )
    sources: dict[str, str] = Field(default_factory=dict, description="Where each input was read.")
    missing: list[str] = Field(default_factory=list, description="Inputs this result does not hold (no prediction).")
    predicted_kv_bytes: int | None = None
    engine_kv_bytes: int | None = Field(None, description="num_blocks x bytes_per_block (the KV the engine allocated).")
    residual_bytes: int | None = Field(None, description="engine_kv_bytes - predicted_kv_bytes.")
    tolerance_bytes: int | None = Field(
        None, description="What the inputs taken from the engine's log (0.01 GiB) and block rounding allow."
    )
    agrees: bool | None = Field(None, description="|residual| <= tolerance; None without a prediction.")
    at_sizing: MemorySample | None = Field(
        None,
        description="The memory sample at the sizing moment: MemFree, MemAvailable, Cached, Shmem, cgroup, device.",
    )


class ExperimentRef(Record):
    """The experiment a result belongs to: its name, the baseline and the condition whose loss it explains."""

    name: str
    baseline: str
    explains: str | None = None
    run_id: str | None = Field(None, description="The experiment run (experiment.json) that made this result.")
    conditions: list[str] = Field(default_factory=list, description="Every condition, in the experiment file's order.")
    order: Literal["interleaved", "blocked"] = Field(
        "interleaved",
        description="interleaved: A B C A B C ...; blocked: every repeat of A, then of B (the original study's).",
    )
    ladder: bool = Field(
        False,
        description="The conditions, in order, are an isolation ladder: each adds one feature to the one before "
        "(the first is native, the last the study's flags); a condition's rung is its index in `conditions`.",
    )


class ExperimentProgress(Record):
    """An experiment's manifest (experiment.json): the cells finished (their exit code) and those that
    ran without writing a result for every model (why), keyed CONDITION/rREPEAT."""

    run_id: str
    status: Literal["running", "unfinished", "finished"]  # an interrupted experiment stays running
    identity: dict[str, str] = Field(default_factory=dict)
    done: dict[str, int] = Field(default_factory=dict)
    unfinished: dict[str, str] = Field(default_factory=dict)
    lanes: dict[str, str] = Field(default_factory=dict, description="With --devices: the GPU each cell ran on.")


class GuardSettings(Record):
    """Floors under which a trial's process group is killed (None: that floor is off)."""

    host_floor_bytes: int | None
    cgroup_floor_bytes: int | None
    pessimistic: bool = Field(False, description="The host floor applied to min(MemAvailable, MemFree) (unified).")


class Environment(Record):
    """Where a measurement was taken (the block `kvprobe env --json` prints)."""

    label: Label | None = None
    container: ContainerFacts
    cgroup: CgroupMemory
    host_memory: dict[str, int]
    free_page_reporting: bool | None = Field(None, description="None in results made before it was recorded.")
    shm_bytes: int | None = None
    memlock_limit_bytes: int | None = None
    gpu: GpuReport
    numa_nodes: list[NumaNode] = Field(default_factory=list, description="Per node: memory, free, CPUs.")
    coherent_gpu_memory_mode: str | None = Field(
        None, description="The NVIDIA driver's CoherentGPUMemoryMode ('driver': CDMM); None where not exposed."
    )
    memory_model: MemoryModel | None = Field(None, description="environment.memory_model; None in older results.")
    software: dict[str, str | None]
    probe_rss_bytes: int | None = None
    warnings: list[str] = Field(default_factory=list)
    condition: Condition | None = Field(None, description="What was done around each start; None: nothing.")
    simulated_from: str | None = Field(None, description="A recorded machine read instead of this one (tests).")
    cluster: ClusterRecord | None = Field(None, description="The Ray cluster a multi-node run measured on.")

    @property
    def kv_pool(self) -> Pool:
        """The memory the KV cache lives in: a discrete GPU's own ("gpu"), or host memory (the CPU
        backend, and GPUs whose memory is the host's: unified)."""
        devices = self.gpu.devices if self.gpu.available else []
        return "gpu" if devices and not any(d.unified_memory for d in devices) else "host"


class ClusterNode(Record):
    """One alive node of the Ray cluster: Ray's view, and the environment block its agent collected."""

    node_id: str
    address: str
    environment: Environment
    guard: GuardSettings = Field(description="The floors this node's agent guarded with (its own memory's).")
    probe_node: bool = Field(False, description="kvprobe (and so the engine's driver) runs on this node.")
    ray_memory_monitor_refresh_ms: str | None = Field(
        None,
        description="RAY_memory_monitor_refresh_ms in the node's raylet environment: 0 turns Ray's memory "
        "monitor off (NVIDIA's two-Spark playbook); None: not set, Ray's default (on), or not recorded.",
    )
    cpus: float | None = Field(None, description="Ray's CPU resource on the node.")
    gpus: float | None = Field(None, description="Ray's GPU resource on the node.")


class ClusterRecord(Record):
    """The Ray cluster of a multi-node run (--ray-address)."""

    address: str
    ray_version: str
    nodes: list[ClusterNode]


Environment.model_rebuild()  # its `cluster` holds nodes that each hold an Environment


# --- the document ---------------------------------------------------------------------------------


NonNegative = Annotated[int, Field(ge=0)]


class KvFigure(Record):
    """The KV cache one passing trial got, as the engine allocated it."""

    trial: int
    utilization: float | None = Field(ge=0, le=1)
    kv_cache_memory_bytes: NonNegative | None
    num_blocks: NonNegative | None
    block_size: NonNegative | None
    tokens: NonNegative | None
    bytes: NonNegative | None = Field(description="num_blocks x bytes_per_block; schema 1: the engine's logged GiB.")
    bytes_per_block: NonNegative | None = None
    bytes_logged: float | None = Field(None, description="The engine's own two-decimal GiB figure, a cross-check.")
    tokens_logged: int | None
    max_concurrency: float | None
    fill: FillResult | None


class SearchSummary(Record):
    """Where one search put its boundary, and the trials it started."""

    boundary: float | None = Field(description="The passing side of the boundary (None: nothing passed).")
    failing: float | None
    tolerance: float
    converged: bool
    censored: bool = Field(description="Passed at the top of the range: the boundary is only a lower bound.")
    non_monotone: bool
    engine_starts: int = Field(description="Starts the search needed (its confirmation not counted).")
    trials: list[int] = Field(description="Every trial of this search, the confirmation included.")
    confirmed: bool | None = Field(None, description="The boundary started again and passed (None: not repeated).")
    flipped: list[float] = Field(default_factory=list, description="Settings that both passed and failed.")
    failed_by: BoundaryKind | None = Field(
        None, description="What set the boundary (utilization searches); filled from the trials when read."
    )

    @property
    def unstable(self) -> bool:
        """Outcomes flipped: a start's fate near this boundary is partly chance."""
        return bool(self.flipped) or self.confirmed is False


class ContainerLimits(Record):
    """What the container saw from inside (its `kvprobe env`), before the run started."""

    memory_limit_bytes: int | None = Field(None, description="The memory cgroup's limit (None: no limit).")
    shm_bytes: int | None = Field(None, description="Size of /dev/shm.")
    memlock_limit_bytes: int | None = Field(None, description="RLIMIT_MEMLOCK (None: unlimited).")
    cgroup_version: str | None = None


class Mount(Record):
    """One bind mount of a chroot: the host's path, where it appears inside, and how."""

    source: str
    target: str
    kind: Literal["rbind", "bind", "bind-ro"]


class ContainerRun(Record):
    """How kvprobe started the side this result was measured in: a container (`kvprobe container`), or
    a chroot of an image's root filesystem in the host's namespaces (runtime `chroot`)."""

    command: list[str]
    runtime: str
    limits: ContainerLimits
    image: str | None = Field(None, description="The image the side ran from (chroot: whose rootfs).")
    image_digest: str | None = Field(None, description="The image's ID as the runtime names it.")
    rootfs: str | None = Field(None, description="chroot: the root filesystem directory.")
    mounts: list[Mount] = Field(default_factory=list, description="chroot: what was mounted inside, from where.")
    gpu_driver: str | None = Field(None, description="chroot: how the GPU driver was made visible, or why not.")


class RunOptions(Record):
    """How the model was measured (nothing here changes its capacity)."""

    tolerance: float
    utilization_range: tuple[float, float]
    fill_target: float
    drop_caches: bool
    cooldown_s: float
    guard: GuardSettings
    searches: list[SearchName]
    strategy: Strategy
    confirm: bool = Field(False, description="Each converged boundary was started once more.")
    prestart: bool = Field(False, description="The next trials' workers imported during the trials before them.")
    prestart_reason: str = ""
    kv_approach: KvApproach = Field(
        "from_below", description="The side the kv_blocks search came from (earlier versions: always from below)."
    )
    kv_approach_reason: str = ""
    container: ContainerRun | None = None
    host_shared: bool = Field(
        False,
        description="Run beside other trials on other GPUs (experiment --devices): each trial ended when its "
        "processes were gone and its GPU was back at its baseline, host memory not awaited.",
    )


class StartOutcome(Record):
    outcome: Outcome
    reason: str


class AttributionParts(Record):
    """The memory pool split into parts, each from an account of its own (see results.attribution)."""

    kv_cache: float = 0.0
    weights: float = 0.0
    activation_peak: float = 0.0
    non_torch: float = 0.0
    other_engine: float = 0.0
    engine_beyond_request: float = 0.0
    other_processes: float = 0.0
    page_cache: float = 0.0
    cgroup_cut: float = 0.0
    kernel_unaccounted: float = 0.0
    free_at_ready: float = 0.0


class BudgetViews(Record):
    """The engine's free memory at its start check against every view kvprobe sampled then."""

    engine_free_bytes: float = Field(description="What the engine logged as free (or available) at its check.")
    views: dict[str, float] = Field(
        description="Host pool: MemAvailable, MemFree, cgroup headroom, per-node MemFree. Discrete GPU: NVML's "
        "free memory per device. Both: CUDA's free memory where the worker read it."
    )
    closest: str = Field(description="The view nearest the engine's figure: where its budget most likely came from.")
    spread_bytes: float = Field(description="Largest minus smallest view at that moment.")


class RankAttribution(Record):
    """One device of a tensor-parallel engine at the u_max start (see measure.attribution.attribute_ranks)."""

    index: int = Field(description="The engine's device (cuda:index), one rank's.")
    nvml_index: int | None = None
    total_bytes: float
    engine_measured_bytes: float | None = Field(description="NVML's per-process use of this device by the engine.")
    parts: AttributionParts
    unexplained_bytes: float
    kv_room_bytes: float | None = Field(
        None, description="utilization x total minus the engine's non-KV use here: the rank with least limits the KV."
    )


class Attribution(Record):
    """Where the memory went at u_max; `unexplained_bytes` is what the accounts leave over. On a
    discrete GPU the top-level parts are device 0's (rank 0's) and `ranks` holds every device's."""

    budget_views: BudgetViews | None = None
    ranks: list[RankAttribution] = Field(default_factory=list, description="Per device (tensor parallelism).")
    limiting_rank: int | None = Field(None, description="The device whose KV room is least (2+ ranks).")

    pool: Pool
    total_bytes: float
    utilization: float | None
    engine_measured_bytes: float | None
    engine_requested_bytes: float
    parts: AttributionParts
    unexplained_bytes: float
    unexplained_fraction: float | None


class NodeParts(Record):
    """One node's pool split into parts, each measured on that node by its agent."""

    engine: float = Field(0.0, description="The trial's processes on this node: private pages by PSS (+ NVML).")
    other_processes: float = Field(0.0, description="Every other process on this node (PSS).")
    other_nodes_same_host: float = Field(0.0, description="The trial's processes of other Ray nodes on this host.")
    page_cache: float = Field(0.0, description="Page cache held on this node at ready.")
    cgroup_cut: float = Field(0.0, description="Memory the node's cgroup limit puts out of reach.")
    kernel_unaccounted: float = Field(0.0, description="Pages the kernel holds in no list /proc/meminfo shows.")
    free_at_ready: float = Field(0.0, description="What was still free on this node at ready.")


class NodeAttribution(Record):
    """Where one node's memory went at the u_max start."""

    node_id: str
    hostname: str
    pool: Pool
    total_bytes: float
    process_titles: list[str]
    parts: NodeParts
    unexplained_bytes: float
    unexplained_fraction: float | None


class KvPrediction(Record):
    """What config.json implies (kvprobe.predict), beside what the engine measured."""

    bytes_per_token: int
    bytes_per_block: int | None = Field(description="At the block size the engine used; None: no block size known.")
    weight_bytes: float
    attention: str = Field(description="The layer groups, e.g. '18 full, 18 sliding (window 128)'.")


class ResultDocument(Record):
    """One model, one repeat, one run: the searches' results and every trial behind them."""

    schema_version: Literal[4] = SCHEMA_VERSION
    run_id: str
    repeat: int
    label: Label
    condition: str = Field(description="The condition's name; the label for plain measure and container runs.")
    experiment: ExperimentRef | None = None
    model: str
    model_path: str
    settings: dict[str, Any] = Field(description="ModelSettings.capacity_settings(): what the hash covers.")
    settings_hash: str
    started_at: float
    finished_at: float
    versions: SoftwareVersions
    device: str = Field(description="What the engine ran on: the GPU's name and count, or the CPU's.")
    environment: Environment
    options: RunOptions = Field(description="How it was measured (nothing here changes the capacity).")
    reference: KvFigure | None = None
    reference_outcome: StartOutcome | None = None
    searches: dict[SearchName, SearchSummary] = Field(default_factory=dict)
    u_max: float | None = Field(None, description="Largest gpu_memory_utilization that started (see searches).")
    u_min: float | None = Field(None, description="Smallest that holds one max_model_len request.")
    kv_at_u_max: KvFigure | None = None
    physical_capacity: KvFigure | None = Field(None, description="Largest explicit KV budget that passed the fill.")
    memory_breakdown: EngineMemoryReport | None = None
    memory_phases: TrialMemory | None = None
    attribution: Attribution | None = Field(None, description="Where the memory went at u_max.")
    node_attribution: list[NodeAttribution] = Field(
        default_factory=list, description="Per Ray node at u_max (multi-node runs only)."
    )
    prediction: KvPrediction | None = Field(None, description="What config.json implies (kvprobe.predict).")
    throughput: ThroughputResult | None = None
    cuda_view: CudaView | None = Field(None, description="CUDA's view, from the first trial that took it.")
    engine_starts: int
    probe_rss_bytes: int | None = None
    replayed_trials: int = 0
    trials: list[TrialRecord] = Field(default_factory=list)
    sizing_checks: list[SizingCheck] = Field(
        default_factory=list, description="Each trial that reported KV, against its engine's equation."
    )
    status: Status
    errors: list[str] = Field(default_factory=list)

    @property
    def u_max_censored(self) -> bool:
        search = self.searches.get("u_max")
        return bool(search and search.censored)

    @property
    def u_max_boundary(self) -> BoundaryKind | None:
        search = self.searches.get("u_max")
        return None if search is None else search.failed_by

    @model_validator(mode="after")
    def _name_each_boundary(self) -> ResultDocument:
        """Each utilization search's `failed_by`, from the failing start's outcome (older files too)."""
        for name, search in self.searches.items():
            if search.failed_by is not None:
                continue
            if search.censored or search.failing is None:
                search.failed_by = "top-of-range" if search.censored else None
                continue
            failing = [
                t
                for t in self.trials
                if t.search == name and t.is_utilization_start and not t.passed and t.utilization == search.failing
            ]
            if failing:
                search.failed_by = BOUNDARY_OF_OUTCOME.get(failing[-1].outcome, "other")
        return self

    def where(self) -> str:
        """How messages name this result."""
        where = self.label if self.condition == self.label else f"{self.condition} ({self.label})"
        return f"{self.model} {where} run {self.run_id} repeat {self.repeat}"
