"""The options of `kvprobe measure` and `kvprobe container`, and the one function that turns them into
a `MeasureRequest` (as hyperfine keeps its option definitions apart from the wiring in main)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource
from pydantic import ValidationError

from kvprobe.config import load_models, parse_utilization_range
from kvprobe.errors import InputError
from kvprobe.measure.request import MeasureRequest, SearchSettings, StartSettings
from kvprobe.results.schema import ContainerSettings
from kvprobe.units import parse_size
from kvprobe.vocabulary import SEARCHES, STRATEGIES


class FiniteFloat(click.FloatRange):
    """A FloatRange that refuses nan and inf (click's own lets nan through every bound)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


MEASURE_HELP = {
    "out": "Results directory (one JSON per model and repeat).",
    "label": "Where this run happens; auto decides from the container evidence.",
    "only": "Measure only this model (repeatable).",
    "repeats": "Measure every model this many times (each a separate result).",
    "cooldown": "Seconds to wait between engine starts.",
    "gpu_temp": "Wait before each start until the GPU is this cool (degrees C).",
    "tolerance": "Utilization tolerance of the searches (a fraction).",
    "range": "Utilization range to search, LO:HI, overriding each model's utilization_range.",
    "searches": "Comma-separated searches, run in this order.",
    "strategy": "bracketed: predict each boundary from the engine's memory report; bisection: plain halving.",
    "fill": "Share of KV blocks the fill test must occupy at once.",
    "throughput": "Also time a fixed decode workload at u_max.",
    "timeout": "Seconds one engine start may take before it is ended (seconds).",
    "guard": "End a trial when the host memory the guard watches (MemAvailable; on unified memory the lower of "
    "it and MemFree) falls below SIZE, e.g. 4g (k, m, g, t: powers of 1024).",
    "no_guard": "Disable the memory guard (not advised on unified memory).",
    "drop_caches": "Drop the page cache before each start (root only).",
    "resume": "Continue the last unfinished run in --out, skipping finished work.",
    "no_confirm": "Do not start each boundary once more to confirm it.",
    "prestart": "Start the next trials' workers (their imports) during a trial; auto: on discrete GPUs only.",
    "kv_approach": "Side the physical-capacity search comes from; auto: from above on discrete GPUs only (there "
    "a budget that does not fit fails at its allocation, before the fill test).",
    "ray": "An existing Ray cluster (host:port) for models with distributed_executor_backend: ray; a kvprobe "
    "agent on every node samples, guards and tears down there.",
    "request": "A whole request as JSON (what `kvprobe container` and `kvprobe experiment` hand their children); "
    "no other measure option may be given with it.",
}
CONTAINER_HELP = {
    "runtime": "The container runtime.",
    "image": "Image with vLLM and kvprobe installed (see docker/Dockerfile).",
    "rootfs": "podman only: run on this root filesystem (e.g. '/:O', the host's own).",
    "memory_limit": "The container's cgroup memory limit (the runtime's --memory), e.g. 4g; --memory is a hidden "
    "alias kept for old command lines.",
    "shm_size": "Size of a private /dev/shm (with --ipc-private), e.g. 60g.",
    "ipc": "Share the host's IPC namespace (the original study's --ipc=host), or a private /dev/shm of --shm-size.",
    "gpus": "--gpus value; auto: all when NVML sees a GPU; none: no GPU flag.",
    "memlock": "--ulimit memlock value; 'none' keeps the runtime's default.",
    "stack": "--ulimit stack value; 'none' keeps the runtime's default.",
    "network": "The runtime's --network value (none: no network inside; the measurement needs none).",
    "oci_runtime": "podman --runtime (default: runc where crun is missing).",
    "python": "Python inside the container (default: this one for --rootfs, the image's kvprobe otherwise).",
    "runtime_flag": "Extra flag for `RUNTIME run`, repeatable (e.g. --runtime-flag=--cpus=2).",
    "both": "Measure natively first, then in the container: one comparable pair.",
    "native_side": "The native half (--both) runs in a chroot of the container's own image (or --rootfs tree), in "
    "the host's namespaces: the same software by construction, no native install needed (root).",
}

# Each command's examples (its --help epilog).
MEASURE_EPILOG = """\b
Examples:
  kvprobe measure -- vllm serve ~/models/Qwen2.5-7B --gpu-memory-utilization 0.85 --max-model-len 32768
  kvprobe measure models.yaml --only tiny-llama --out results
  kvprobe measure models.yaml --searches reference,u_max --range 0.5:0.95
  kvprobe measure models.yaml --resume --out results     continue a killed run
"""

CONTAINER_EPILOG = """\b
Examples:
  kvprobe container models.yaml --runtime docker --image kvprobe-vllm --both
  kvprobe container models.yaml --runtime podman --rootfs /:O --memory-limit 8g --ipc-private --both
"""

EXPERIMENT_EPILOG = """\b
Examples:
  kvprobe experiment experiments/dgx-spark.yaml --out results-spark --dry-run
  kvprobe experiment experiments/dgx-spark.yaml --out results-spark
  kvprobe experiment experiments/dgx-spark.yaml --out results-spark --resume
"""

REPORT_EPILOG = """\b
Examples:
  kvprobe report results                      writes results/report/
  kvprobe report results-a results-b --out report --format markdown,json
"""

PREDICT_HELP = {
    "memory": "The pool gpu_memory_utilization multiplies, with its unit: 119.6g, 119.6GiB, 80g (k, m, g, t are "
    "powers of 1024; GB is read as GiB). A bare number is refused.",
    "utilization": "gpu_memory_utilization, a fraction of the pool (0-1].",
    "from": "A result of the same model whose activation peak and non-torch memory to subtract too.",
    "json": "Print every figure as JSON (bytes, blocks and tokens exact), with the pool and its source.",
}

PREDICT_EPILOG = """\b
Examples:
  kvprobe predict models.yaml                       this machine's pool
  kvprobe predict models.yaml --memory 119.6g --only gpt-oss-120b
  kvprobe predict models.yaml --memory 80g --from results/MODEL/RESULT.json --json
  kvprobe predict --memory 119.6g -- vllm serve ~/models/Qwen2.5-7B --max-model-len 32768
"""

BUNDLE_EPILOG = """\b
Examples:
  kvprobe bundle results-spark                 writes results-spark.tar.gz
  kvprobe bundle results-spark --out ~/spark.tar.gz --keep-identity
"""


_measure = [
    click.option("--out", "out_dir", default="results", show_default=True, type=click.Path(file_okay=False)),
    click.option("--label", type=click.Choice(["native", "container", "auto"]), default="auto", show_default=True),
    click.option("--only", multiple=True),
    click.option("--repeats", type=click.IntRange(1), default=1, show_default=True),
    click.option("--cooldown", "cooldown_s", type=FiniteFloat(0), default=0.0, show_default=True),
    click.option("--max-gpu-temp", "max_gpu_temp_c", type=int, show_default="no wait"),
    click.option("--tolerance", type=FiniteFloat(0.001, 0.5), default=0.01, show_default=True),
    click.option("--range", "utilization_range", metavar="LO:HI", show_default="each model's"),
    click.option("--searches", default=",".join(SEARCHES), show_default=True),
    click.option("--strategy", type=click.Choice(STRATEGIES), default="bracketed", show_default=True),
    click.option("--fill-target", type=FiniteFloat(0.1, 1.0), default=0.95, show_default=True),
    click.option("--throughput", is_flag=True),
    click.option("--trial-timeout", "trial_timeout_s", type=FiniteFloat(10), default=900.0, show_default=True),
    click.option("--guard-floor", metavar="SIZE", show_default="max(2 GiB, 3%) host, 3% cgroup"),
    click.option("--no-guard", is_flag=True),
    click.option("--drop-caches", is_flag=True),
    click.option("--resume", is_flag=True),
    click.option("--no-confirm", is_flag=True),
    click.option("--prestart", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True),
    click.option(
        "--kv-approach", type=click.Choice(["auto", "from-below", "from-above"]), default="auto", show_default=True
    ),
    click.option("--request", "request_json", metavar="JSON"),
]
_container = [
    click.option("--runtime", type=click.Choice(["docker", "podman"]), required=True),
    click.option("--image"),
    click.option("--rootfs"),
    click.option("--memory-limit", "memory", metavar="SIZE", show_default="no limit"),
    click.option("--memory", "memory_alias", metavar="SIZE", hidden=True),
    click.option("--shm-size", default="60g", show_default=True),
    click.option("--ipc-host/--ipc-private", "ipc_host", default=True, show_default=True),
    click.option("--gpus", default="auto", show_default=True),
    click.option("--memlock", default="-1", show_default=True),
    click.option("--stack", default="67108864", show_default=True),
    click.option("--network", default="none", show_default=True),
    click.option("--oci-runtime", show_default="runc where crun is missing"),
    click.option("--python"),
    click.option("--runtime-flag", "runtime_flags", multiple=True),
    click.option("--both", is_flag=True),
    click.option("--native-from-image", "native_side", flag_value="image", default="host"),
]
_HELP_KEY = {"out_dir": "out", "cooldown_s": "cooldown", "max_gpu_temp_c": "gpu_temp", "utilization_range": "range"}
_HELP_KEY |= {"fill_target": "fill", "trial_timeout_s": "timeout", "guard_floor": "guard", "request_json": "request"}
_HELP_KEY |= {"ipc_host": "ipc", "runtime_flags": "runtime_flag", "memory": "memory_limit"}
DISPLAY_HELP = {
    "log_format": "Records, one per line, for tools (jq, awk): jsonl or logfmt. Default: the live display on a "
    "terminal, jsonl when piped.",
    "show_engine_log": "Stream the engine's log lines as they come.",
}
_display = [
    click.option(
        "--log-format",
        type=click.Choice(["jsonl", "logfmt"]),
        envvar="KVPROBE_LOG_FORMAT",
        show_default="live display on a terminal, jsonl when piped",
    ),
    click.option("--show-engine-log", is_flag=True, envvar="KVPROBE_SHOW_ENGINE_LOG"),
]
DISPLAY_OPTIONS = ("log_format", "show_engine_log")
SERVE_USAGE = "[MODELS_FILE | -- vllm serve MODEL [VLLM_FLAGS]...]"


def model_inputs(words: tuple[str, ...]) -> tuple[str | None, tuple[str, ...] | None]:
    """MODELS_FILE, or a `vllm serve MODEL ...` command line (after --): (models file, serve command)."""
    if words and words[0] == "vllm":
        return None, words
    if len(words) > 1:
        raise InputError(
            f"unexpected arguments after MODELS_FILE: {' '.join(words[1:])} (a vLLM command line goes after "
            "--: kvprobe measure -- vllm serve MODEL --flag value ...)"
        )
    return (words[0] if words else None), None


def _with_help(options: list, help_texts: dict[str, str]) -> Callable:
    def decorate(func: Callable) -> Callable:
        for option in reversed(options):
            func = option(func)
        for param in func.__click_params__:  # type: ignore[attr-defined]
            key = _HELP_KEY.get(param.name, param.name)
            if key in help_texts and not param.help:
                param.help = help_texts[key]
        return func

    return decorate


measure_options = _with_help(_measure, MEASURE_HELP)
display_options = _with_help(_display, DISPLAY_HELP)
container_options = _with_help(_container, CONTAINER_HELP)


def request_from_options(words: tuple[str, ...], values: dict, container: dict | None = None) -> MeasureRequest:
    """The request the command line asks for: --request as given, or the options (all problems at once).
    `words`: MODELS_FILE, or a `vllm serve MODEL ...` command line."""
    models_file, serve_command = model_inputs(words)
    request_json = values.pop("request_json", None)
    if request_json is not None:
        context = click.get_current_context()
        given = [name for name in values if context.get_parameter_source(name) is ParameterSource.COMMANDLINE]
        if words or given:
            raise InputError("--request: give the whole request, no MODELS_FILE or other measure option beside it")
        return _validated(MeasureRequest.model_validate_json, request_json)
    if models_file is None and serve_command is None:
        raise InputError("MODELS_FILE: missing (or a `vllm serve MODEL ...` command line after --, or --request)")
    problems, span, floor = [], None, None
    try:
        span = parse_utilization_range(values["utilization_range"]) if values["utilization_range"] else None
    except ValueError as exc:
        problems.append(f"--range: {exc}")
    try:
        floor = parse_size(values["guard_floor"]) if values["guard_floor"] else None
    except ValueError as exc:
        problems.append(f"--guard-floor: {exc}")
    searches = tuple(s.strip() for s in values["searches"].split(",") if s.strip())
    if not searches or any(s not in SEARCHES for s in searches):
        problems.append(f"--searches: give one or more of {', '.join(SEARCHES)}, comma-separated")
    if problems and models_file is not None:  # the models file's own problems too, all in one message
        try:
            load_models(models_file, list(values["only"]) or None)
        except InputError as exc:
            problems.append(str(exc))
    if problems:
        raise InputError("\n".join(problems))
    search = {name: values[name] for name in ("tolerance", "strategy", "fill_target", "throughput", "prestart")}
    search |= {"utilization_range": span, "searches": searches, "confirm": not values["no_confirm"]}
    search["kv_approach"] = values["kv_approach"].replace("-", "_")
    start = {name: values[name] for name in ("cooldown_s", "max_gpu_temp_c", "drop_caches", "trial_timeout_s")}
    start |= {"guard": not values["no_guard"], "guard_floor_bytes": floor}
    fields = {name: values[name] for name in ("out_dir", "label", "only", "repeats", "resume")}
    fields |= {"ray_address": values.get("ray_address"), "models_file": models_file, "serve_command": serve_command}
    if container is not None:
        fields |= {"both": container.pop("both"), "container": ContainerSettings(**container)}
    return _validated(
        lambda _: MeasureRequest(search=SearchSettings(**search), start=StartSettings(**start), **fields), None
    )


def _validated(build: Callable[[Any], MeasureRequest], given: Any) -> MeasureRequest:
    try:
        return build(given)
    except ValidationError as exc:
        raise InputError("\n".join(_sentence(error) for error in exc.errors())) from None


def _sentence(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "request"
    return f"{where}: {error['msg']}"
