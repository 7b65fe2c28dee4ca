"""The experiment file: models, conditions, baseline, repeats; read and checked in one place.

    name: cpu-demo
    models: ../models.yaml          # relative to this file
    only: [tiny-llama-1g]
    baseline: native
    explains: container-limit       # the condition whose loss the others are held against
    repeats: 3
    order: interleaved              # or blocked: every repeat of one condition, then the next
    ladder: false                   # true: the conditions, in order, add one isolation feature each
    conditions:
      native: {}
      page-cache: {page_cache: 6g}
      from-image: {native_from_image: {image: kvprobe-vllm}}

Every problem is reported at once, each naming the file, the condition and the field.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kvprobe.config import ConfigError, ModelSettings, load_models, parse_utilization_range, read_document
from kvprobe.environment.memory import read_cgroup_memory
from kvprobe.measure.containers import isolation_problems, refused_runtime_flags
from kvprobe.results.schema import Condition, ContainerSettings, ExperimentRef, NativeFromImage
from kvprobe.units import gib, parse_size
from kvprobe.vocabulary import SEARCHES, Search, Strategy

CONDITION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # names result files: no '/', no markup
SIZE_FIELDS = {
    "page_cache": "page_cache_bytes",
    "hold_memory": "hold_memory_bytes",
    "cgroup_limit": "cgroup_limit_bytes",
}


class ConditionEntry(BaseModel):
    """One condition as written in the file (sizes as text, e.g. 6g)."""

    model_config = ConfigDict(extra="forbid")

    container: ContainerSettings | None = None
    page_cache: str | None = None
    hold_memory: str | None = None
    drop_caches: bool = False
    cgroup_limit: str | None = None
    weights: str | None = Field(None, pattern="^(real|dummy)$")
    weights_dir: str | None = None
    native_from_image: NativeFromImage | None = None

    @field_validator("page_cache", "hold_memory", "cgroup_limit", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValueError(f"expected a size such as 4g, got {value!r}")
        if parse_size(str(value)) <= 0:
            raise ValueError("must be larger than zero")
        return str(value)


class ExperimentFile(BaseModel):
    """The whole experiment file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=CONDITION_NAME.pattern, description="Names the experiment in its results.")
    models: str = Field(description="The models file, relative to the experiment file.")
    only: list[str] = Field(default_factory=list, description="Measure only these models.")
    baseline: str = Field(description="The condition every other one is compared with.")
    explains: str | None = Field(None, description="The condition whose loss against the baseline is explained.")
    repeats: int = Field(3, ge=1, le=100)
    cooldown: float = Field(0.0, ge=0, description="Seconds between engine starts.")
    searches: list[Search] = Field(default_factory=lambda: list(SEARCHES))
    strategy: Strategy = "bracketed"
    tolerance: float = Field(0.01, ge=0.001, le=0.5)
    range: str | list[float] | None = Field(None, description="LO:HI, overriding each model's utilization_range.")
    confirm: bool = True
    trial_timeout: float = Field(900.0, ge=10)
    guard_floor: str | None = None
    order: Literal["interleaved", "blocked"] = Field(
        "interleaved", description="interleaved: A B C A B C ...; blocked: all of A's repeats, then B's (the study's)."
    )
    ladder: bool = Field(False, description="The conditions, in order, add one isolation feature each.")
    conditions: dict[str, ConditionEntry] = Field(min_length=1)

    @field_validator("range")
    @classmethod
    def _range(cls, value: Any) -> Any:
        if value is not None:
            parse_utilization_range(value)
        return value


class Experiment(BaseModel):
    """A checked experiment: resolved paths, conditions in the file's order, its models."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    path: Path
    file: ExperimentFile
    models_file: Path
    models: list[ModelSettings]
    conditions: list[Condition]

    @property
    def reference(self) -> ExperimentRef:
        return ExperimentRef(
            name=self.file.name,
            baseline=self.file.baseline,
            explains=self.file.explains,
            conditions=list(self.file.conditions),
            order=self.file.order,
            ladder=self.file.ladder,
        )

    def identity(self) -> dict[str, str]:
        """What a resumed run must share with the run it continues: the experiment's settings and
        its models' settings, as checked (comments, layout and models it does not measure do not count)."""
        models = [
            {**model.model_dump(mode="json", exclude_defaults=True), "model": self._as_written(model.model)}
            for model in self.models
        ]
        return {
            "experiment_settings_sha256": _sha256_json(self.file.model_dump(mode="json", exclude_defaults=True)),
            "models_settings_sha256": _sha256_json(models),
        }

    def _as_written(self, model: str) -> str:
        """A model directory relative to the models file, as written there (a moved checkout is the
        same experiment); a hub name as it is."""
        path = Path(model)
        return os.path.relpath(path, self.models_file.parent) if path.is_absolute() else model

    def file_digests(self) -> dict[str, str]:
        """The identity runs before 2026-12 recorded: the two files' bytes (a comment counted)."""
        return {
            "experiment_sha256": hashlib.sha256(self.path.read_bytes()).hexdigest(),
            "models_sha256": hashlib.sha256(self.models_file.read_bytes()).hexdigest(),
        }


def _sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _where(path: Path, condition: str | None, field: str) -> str:
    return f"{path}: condition '{condition}': field '{field}'" if condition else f"{path}: field '{field}'"


def _validation_problems(path: Path, exc: ValidationError) -> list[str]:
    problems = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"].removeprefix("Value error, ")
        if loc[:1] == ["conditions"] and len(loc) > 2:
            problems.append(f"{_where(path, loc[1], '.'.join(loc[2:]))}: {message}")
        else:
            problems.append(f"{_where(path, None, '.'.join(loc) or '(file)')}: {message}")
    return problems


def _weights_problems(path: Path, name: str, entry: ConditionEntry, models: list[ModelSettings]) -> list[str]:
    if entry.weights != "real":
        return [f"{_where(path, name, 'weights_dir')}: only with weights: real"] if entry.weights_dir else []
    if not entry.weights_dir:
        return [f"{_where(path, name, 'weights_dir')}: weights: real needs the directory of the weight files"]
    problems = []
    for model in models:
        directory = (path.parent / entry.weights_dir.replace("{model}", model.name)).resolve()
        config = directory / "config.json"
        if not directory.is_dir() or not any(directory.glob("*.safetensors")):
            problems.append(
                f"{_where(path, name, 'weights_dir')}: {directory} holds no *.safetensors for model "
                f"'{model.name}' (scripts/make_random_weights.py writes them)"
            )
        elif not config.is_file() or json.loads(config.read_text()) != model.hf_config():
            problems.append(f"{_where(path, name, 'weights_dir')}: {config} is not model '{model.name}''s config.json")
    return problems


def _machine_problems(path: Path, name: str, entry: ConditionEntry) -> list[str]:
    """Conditions that need root or a cgroup this machine does not offer, refused before anything runs."""
    problems = []
    is_root = os.geteuid() == 0
    if entry.drop_caches and not (is_root and os.access("/proc/sys/vm/drop_caches", os.W_OK)):
        problems.append(f"{_where(path, name, 'drop_caches')}: needs root and a writable /proc/sys/vm/drop_caches")
    if entry.cgroup_limit and not (is_root and read_cgroup_memory().version in ("v1", "v2", "hybrid")):
        problems.append(f"{_where(path, name, 'cgroup_limit')}: needs root and a memory cgroup (v1 or v2) here")
    if entry.cgroup_limit and entry.container:
        problems.append(f"{_where(path, name, 'cgroup_limit')}: a container has its own; use container.memory")
    if entry.native_from_image and not is_root:
        problems.append(f"{_where(path, name, 'native_from_image')}: a chroot needs root (run kvprobe as root)")
    return problems + _size_problems(path, name, entry)


MIN_CGROUP_LIMIT = 512 << 20  # below this vLLM's CPU worker cannot even import; the OOM killer comes first
MAX_SANE_SIZE = 16 << 40  # 16 TiB: beyond the memory of any machine kvprobe measures


def _size_problems(path: Path, name: str, entry: ConditionEntry) -> list[str]:
    """Sizes no machine can honour, refused at load (the file may be meant for another machine: what
    this one cannot honour is refused before the first cell, experiment.session.machine_problems)."""
    problems = []
    sizes = {field: parse_size(value) for field in SIZE_FIELDS if (value := getattr(entry, field))}
    for field in ("page_cache", "hold_memory"):
        if sizes.get(field, 0) > MAX_SANE_SIZE:
            problems.append(f"{_where(path, name, field)}: {gib(sizes[field], unit=True)} is beyond any machine")
    limit = sizes.get("cgroup_limit")
    if limit is not None and limit < MIN_CGROUP_LIMIT:
        problems.append(
            f"{_where(path, name, 'cgroup_limit')}: {gib(limit, unit=True)} is below "
            f"{gib(MIN_CGROUP_LIMIT, unit=True)}: too small for an engine to start"
        )
    return problems


def _side_problems(path: Path, name: str, entry: ConditionEntry) -> list[str]:
    """Contradictions in how the condition's side is made: container fields, or the image's chroot."""
    problems = []
    box, image = entry.container, entry.native_from_image
    if box is not None:
        problems += [f"{_where(path, name, 'container.' + field)}: {text}" for field, text in isolation_problems(box)]
        problems += [
            f"{_where(path, name, 'container.runtime_flags')}: {flag}: refused: {why}"
            for flag, why in refused_runtime_flags(box.runtime_flags)
        ]
        if "shm_size" in box.model_fields_set and box.ipc_host:
            problems.append(
                f"{_where(path, name, 'container.shm_size')}: has no effect with the host's IPC (ipc_host is true "
                "unless set); give ipc: private for a private /dev/shm of this size"
            )
        if image is not None:
            problems.append(f"{_where(path, name, 'native_from_image')}: a condition runs in a container or natively")
    if image is not None and (image.image is None) == (image.rootfs is None):
        problems.append(f"{_where(path, name, 'native_from_image')}: give exactly one of image and rootfs")
    return problems


def _condition(path: Path, name: str, entry: ConditionEntry) -> Condition:
    sizes = {
        target: parse_size(getattr(entry, source)) for source, target in SIZE_FIELDS.items() if getattr(entry, source)
    }
    weights_dir = str(path.parent.resolve() / entry.weights_dir) if entry.weights_dir else None
    return Condition(
        name=name,
        container=entry.container,
        drop_caches=entry.drop_caches,
        weights=entry.weights,
        weights_dir=weights_dir,
        native_from_image=entry.native_from_image,
        **sizes,
    )


def load_experiment(path: str | Path) -> Experiment:
    """Read and check an experiment file; ConfigError lists every problem, one per line."""
    path = Path(path)
    file = read_document(
        path, ExperimentFile, "'models', 'baseline' and 'conditions'", lambda exc: _validation_problems(path, exc)
    )
    problems = [
        f"{path}: condition '{name}': its name must be letters, digits, '.', '_' or '-' (at most 64)"
        for name in file.conditions
        if not CONDITION_NAME.fullmatch(str(name))
    ]
    for field in ("baseline", "explains"):
        value = getattr(file, field)
        if value is not None and value not in file.conditions:
            problems.append(f"{_where(path, None, field)}: '{value}' is not one of the conditions")
    models_file = (path.parent / file.models).resolve()
    models: list[ModelSettings] = []
    try:
        models = load_models(models_file, file.only or None)
    except ConfigError as exc:
        problems += [f"{_where(path, None, 'models')}: {line}" for line in str(exc).splitlines()]
    for name, entry in file.conditions.items():
        problems += _weights_problems(path, name, entry, models) + _machine_problems(path, name, entry)
        problems += _side_problems(path, name, entry)
    if file.guard_floor is not None:
        try:
            parse_size(file.guard_floor)
        except ValueError as exc:
            problems.append(f"{_where(path, None, 'guard_floor')}: {exc}")
    if problems:
        raise ConfigError("\n".join(problems))
    conditions = [_condition(path, name, entry) for name, entry in file.conditions.items()]
    return Experiment(path=path, file=file, models_file=models_file, models=models, conditions=conditions)
