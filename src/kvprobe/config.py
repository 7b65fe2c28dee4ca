"""The models.yaml schema: one typed model per engine setting, loaded and checked in one place."""

from __future__ import annotations

import argparse
import hashlib
import json
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import ErrorDetails

from kvprobe.engine_args import ENGINE_CONTROLLED_ARGS, known_engine_args
from kvprobe.errors import InputError
from kvprobe.safe_io import UnsafeFile, read_bytes, read_json, read_text
from kvprobe.vocabulary import EngineName

DEFAULT_UTILIZATION_RANGE = (0.05, 0.99)
MAX_MODELS_FILE_BYTES = 1 << 20  # a models file is a few KiB; anything far larger is not one
MAX_MODEL_LEN = 1 << 24
MAX_NAME_LENGTH = 100
MAX_ENGINE_ARGS_BYTES = 64 << 10
MAX_CONFIG_BYTES = 16 << 20  # a model's config.json is a few KiB
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


Document = TypeVar("Document", bound=BaseModel)


class ConfigError(InputError):
    """Bad input: the message names the file, the model and the field. The CLI exits 2."""


def parse_utilization_range(value: Any) -> tuple[float, float]:
    """Accept 'LO:HI' or [LO, HI]; both ends in (0, 1] and LO < HI."""
    if isinstance(value, str):
        parts = value.split(":")
        if len(parts) != 2:
            raise ValueError(f"expected LO:HI, got {value!r}")
        try:
            lo, hi = float(parts[0]), float(parts[1])
        except ValueError as exc:
            raise ValueError(f"expected numbers in LO:HI, got {value!r}") from exc
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        if not all(isinstance(end, (int, float)) and not isinstance(end, bool) for end in value):
            raise ValueError(f"expected two numbers, got {value!r}")
        lo, hi = float(value[0]), float(value[1])
    else:
        raise ValueError(f"expected LO:HI or [LO, HI], got {value!r}")
    for end in (lo, hi):
        if not 0.0 < end <= 1.0:
            raise ValueError(f"utilization {end} is outside (0, 1]")
    if lo >= hi:
        raise ValueError(f"range low end {lo} is not below its high end {hi}")
    return lo, hi


class ModelSettings(BaseModel):
    """One model to probe and the engine settings that decide its KV capacity."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Unique name used in results and reports.")
    engine: EngineName = Field(
        "vllm",
        description="The serving engine: 'vllm', or 'tensorrt-llm' (its LLM API, PyTorch backend; there "
        "free_gpu_memory_fraction, a fraction of FREE memory, is searched where vLLM's utilization is). "
        "The TensorRT-LLM adapter has not been run against a real TensorRT-LLM here.",
    )
    model: str = Field(
        description="A weight directory, or a directory holding only a public config.json "
        "(then load_format must be dummy). Relative paths start at the models file."
    )
    load_format: str = Field(
        "auto",
        validate_default=True,  # the default (load the weights) needs weight files too
        description="vLLM load format; 'dummy' starts without weights (random values).",
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32", "half"] = Field(
        "auto", description="Weight and activation dtype."
    )
    kv_cache_dtype: Literal["auto", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2"] = Field(
        "auto", description="KV cache dtype; fp8 halves the bytes per token."
    )
    max_model_len: int = Field(
        gt=0,
        le=MAX_MODEL_LEN,
        strict=True,
        description="Longest request (prompt + output) in tokens; u_min holds one such request.",
    )
    block_size: int | None = Field(None, gt=0, description="Tokens per KV block; None keeps the engine's default.")
    max_num_seqs: int | None = Field(
        None, gt=0, description="Most concurrent sequences; None keeps the engine's default."
    )
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs the model is split across.")
    engine_defaults: Literal["serve", "offline"] = Field(
        "serve",
        description="Which vLLM defaults fill scheduler settings left unset (max_num_batched_tokens, "
        "max_num_seqs): 'serve' as `vllm serve` (the OpenAI server), 'offline' as the LLM class. They "
        "size the profiling run, so they change KV capacity.",
    )
    enforce_eager: bool = Field(False, description="Skip CUDA graph capture (saves memory and start time).")
    gpu_memory_utilization: float = Field(
        0.9,
        gt=0.0,
        le=1.0,
        description="The utilization you serve with: the reference start measures KV capacity exactly here "
        "(matched between native and container runs). In (0, 1].",
    )
    utilization_range: tuple[float, float] = Field(
        DEFAULT_UTILIZATION_RANGE,
        description="Lowest and highest gpu_memory_utilization the search may try, each in (0, 1]. "
        "The command line's --range overrides it.",
    )
    extra_engine_args: dict[str, Any] = Field(
        default_factory=dict,
        description="Further vLLM engine arguments, checked against vLLM's own EngineArgs.",
    )

    @field_validator("name")
    @classmethod
    def _name_is_a_file_name(cls, name: str) -> str:
        if not name or any(c in name for c in '/\\:*?"<>| ') or name.startswith("."):
            raise ValueError("must be non-empty and usable as a file name (no spaces, slashes or leading dot)")
        if not name.isprintable() or len(name) > MAX_NAME_LENGTH:
            raise ValueError(f"must be printable characters, at most {MAX_NAME_LENGTH} (no tabs or newlines)")
        return name

    @field_validator("utilization_range", mode="before")
    @classmethod
    def _range(cls, value: Any) -> tuple[float, float]:
        return parse_utilization_range(value)

    @field_validator("extra_engine_args")
    @classmethod
    def _engine_args_known(cls, args: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if not args:
            return args
        try:
            size = len(json.dumps(args))
        except (TypeError, ValueError):
            raise ValueError("values must be plain YAML scalars, lists or mappings") from None
        if size > MAX_ENGINE_ARGS_BYTES:
            raise ValueError(f"{size} bytes of engine arguments, more than {MAX_ENGINE_ARGS_BYTES}")
        controlled = sorted(set(args) & ENGINE_CONTROLLED_ARGS)
        if controlled:
            raise ValueError(f"{', '.join(controlled)} is set by the probe itself, not in extra_engine_args")
        first_class = sorted(set(args) & set(ModelSettings.model_fields))
        if first_class:
            raise ValueError(f"{', '.join(first_class)} has its own field; set it there")
        if info.data.get("engine", "vllm") != "vllm":
            return args  # TensorRT-LLM's LLM API checks its own arguments at start (it is not importable here)
        known = known_engine_args()
        unknown = sorted(a for a in args if a not in known)
        if unknown:
            raise ValueError(f"unknown vLLM engine argument {', '.join(map(repr, unknown))}")
        return args

    @field_validator("model")
    @classmethod
    def _model_directory(cls, model: str) -> str:
        path = Path(model)
        if not path.is_dir():
            raise ValueError(f"directory {model} does not exist")
        if not (path / "config.json").exists():
            raise ValueError(f"{model} has no config.json")
        try:
            config = read_json(path / "config.json", MAX_CONFIG_BYTES, kind="a config", follow=True)
        except OSError as exc:
            raise ValueError(f"{model}/config.json: cannot read: {exc.strerror}") from None
        except UnsafeFile as exc:
            raise ValueError(str(exc)) from None
        if not isinstance(config, dict):
            raise ValueError(f"{model}/config.json is not a JSON object")
        return model

    @field_validator("load_format")
    @classmethod
    def _weights_present(cls, load_format: str, info: ValidationInfo) -> str:
        model = info.data.get("model")
        if model and load_format != "dummy" and not any(p.suffix in WEIGHT_SUFFIXES for p in Path(model).iterdir()):
            raise ValueError(f"{model} holds no weight files; set load_format: dummy to start without weights")
        return load_format

    @property
    def uses_ray(self) -> bool:
        """Its ranks are placed by Ray (possibly across nodes): measured on a cluster (--ray-address)."""
        return self.extra_engine_args.get("distributed_executor_backend") == "ray"

    @property
    def ranks(self) -> int:
        """Engine ranks: tensor x pipeline parallel size."""
        return self.tensor_parallel_size * int(self.extra_engine_args.get("pipeline_parallel_size", 1))

    @property
    def architecture_digest(self) -> str:
        """SHA-256 of config.json: the architecture, independent of where the directory is mounted."""
        return hashlib.sha256(read_bytes(Path(self.model) / "config.json", MAX_CONFIG_BYTES, follow=True)).hexdigest()

    def hf_config(self) -> dict[str, Any]:
        """The model's config.json (checked to be a JSON object when the models file was loaded)."""
        return read_json(Path(self.model) / "config.json", MAX_CONFIG_BYTES, kind="a config", follow=True)

    def capacity_settings(self) -> dict[str, Any]:
        """Everything that changes KV capacity: matched runs have equal settings (and hash)."""
        fields = self.model_dump(exclude={"name", "model", "utilization_range"})
        if fields["engine"] == "vllm":
            del fields["engine"]  # vLLM settings hash as before the field existed: committed results still match
        fields["architecture_sha256"] = self.architecture_digest
        return fields

    def settings_hash(self) -> str:
        canonical = json.dumps(self.capacity_settings(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class ModelsFile(BaseModel):
    """The whole models.yaml: shared defaults and the list of models."""

    model_config = ConfigDict(extra="forbid")

    defaults: dict[str, Any] = Field(default_factory=dict, description="Fields applied to every model.")
    models: list[dict[str, Any]] = Field(min_length=1, description="One entry per model.")


def _field_path(error: ErrorDetails) -> str:
    return ".".join(str(part) for part in error["loc"]) or "(model)"


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without anchors' aliases: a models file needs none, and aliases can expand a small file
    into gigabytes (a 'billion laughs' file)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a models file", mark)
        return super().compose_node(parent, index)


def read_yaml(path: Path) -> Any:
    """A YAML file of at most a MiB, without aliases; ConfigError names the file and the problem."""
    try:
        size = path.stat().st_size
        if size > MAX_MODELS_FILE_BYTES:
            raise ConfigError(f"{path}: {size} bytes; a models file is at most {MAX_MODELS_FILE_BYTES} bytes")
        return yaml.load(read_text(path, MAX_MODELS_FILE_BYTES, follow=True), Loader=_NoAliasLoader)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except UnsafeFile as exc:
        raise ConfigError(str(exc)) from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to read") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} YAML syntax error: {getattr(exc, 'problem', exc)}") from None


def read_document(path: Path, schema: type[Document], keys: str, describe: Callable[[ValidationError], list[str]]):
    """A YAML file validated by `schema`; ConfigError lists every problem (`describe` words them)."""
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with {keys}")
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError("\n".join(describe(exc))) from None


def _read_models_file(path: Path) -> ModelsFile:
    def describe(exc: ValidationError) -> list[str]:
        return [f"{path}: field '{_field_path(e)}': {e['msg']}" for e in exc.errors()]

    document = read_document(path, ModelsFile, "'defaults' and 'models'", describe)
    unknown = sorted(set(document.defaults) - set(ModelSettings.model_fields) | ({"name"} & set(document.defaults)))
    if unknown:
        raise ConfigError("\n".join(f"{path}: defaults: unknown key '{key}'" for key in unknown))
    return document


def _entry_label(index: int, entry: Any) -> str:
    name = entry.get("name") if isinstance(entry, dict) else None
    return name if isinstance(name, str) and name.isprintable() and len(name) <= MAX_NAME_LENGTH else f"#{index + 1}"


def _model_settings(
    path: Path, index: int, entry: Any, defaults: dict[str, Any]
) -> tuple[ModelSettings | None, list[str]]:
    """One entry's settings, or every problem with it (each naming file, model and field)."""
    label = _entry_label(index, entry)
    if not isinstance(entry, dict):
        return None, [f"{path}: model {label}: expected a mapping of fields"]
    merged = {**defaults, **entry}
    if isinstance(merged.get("model"), str):
        merged["model"] = str((path.parent / merged["model"]).resolve())
    try:
        return ModelSettings.model_validate(merged), []
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            message = (
                "unknown key" if error["type"] == "extra_forbidden" else error["msg"].removeprefix("Value error, ")
            )
            problems.append(f"{path}: model '{label}': field '{_field_path(error)}': {message}")
        return None, problems


# Letters of other scripts drawn like Latin ones (Unicode's confusables for the scripts model names
# mix in practice): a name that differs from another only by these is the same name to a reader.
_LOOK_ALIKES = str.maketrans(
    "аеорсухіјѕԁԛԝвнкмтӏαβεικνορτυχ",  # Cyrillic, then Greek
    "aeopcyxijsdqwbhkmtlabeiknoptux",
)
_SCRIPTS = ("LATIN", "CYRILLIC", "GREEK")


def _look(name: str) -> str:
    """What a reader (and a normalising filesystem) sees: NFKC form, no case, look-alike letters as Latin."""
    return unicodedata.normalize("NFKC", name).casefold().translate(_LOOK_ALIKES)


def _scripts(name: str) -> set[str]:
    return {script for c in name if c.isalpha() for script in _SCRIPTS if unicodedata.name(c, "").startswith(script)}


def name_problems(path: Path, names: list[str]) -> list[str]:
    """Names that a reader or a filesystem cannot tell apart: equal after NFKC, case folding and
    look-alike letters (NFC/NFD forms collide on macOS, case on case-insensitive filesystems), and
    names that mix Latin, Cyrillic and Greek letters (a homoglyph disguised as its neighbours)."""
    problems = []
    seen: dict[str, str] = {}
    for name in names:
        mixed = _scripts(name)
        if len(mixed) > 1:
            scripts = " and ".join(sorted(mixed)).lower()
            problems.append(f"{path}: model {name!a}: field 'name': mixes {scripts} letters")
        first = seen.setdefault(_look(name), name)
        if first != name:
            problems.append(
                f"{path}: model {name!a}: field 'name': looks like model {first!a} (differs only in Unicode "
                "form, case or look-alike letters)"
            )
    return problems


def load_models(path: str | Path, only: list[str] | None = None) -> list[ModelSettings]:
    """Read and check a models file; raise ConfigError with one line per problem, all of them,
    each naming the file, the model and the field."""
    path = Path(path)
    document = _read_models_file(path)
    models, problems = [], []
    for index, entry in enumerate(document.models):
        settings, found = _model_settings(path, index, entry, document.defaults)
        problems += found
        if settings is not None:
            models.append(settings)
    counts = Counter(m.name for m in models)
    problems += [
        f"{path}: model '{name}': field 'name': appears more than once ({n} times)"
        for name, n in counts.items()
        if n > 1
    ]
    names = [m.name for m in models]
    problems += name_problems(path, list(dict.fromkeys(names)))
    if only and not problems:
        missing = sorted(set(only) - set(names))
        problems += [f"{path}: --only names unknown model '{m}' (known: {', '.join(names)})" for m in missing]
    if problems:
        raise ConfigError("\n".join(problems))
    return [m for m in models if m.name in only] if only else models


# ModelSettings fields a `vllm serve` command line sets under vLLM's own names (its argparse dests).
SERVE_FIELDS = (
    "load_format",
    "dtype",
    "kv_cache_dtype",
    "max_model_len",
    "block_size",
    "max_num_seqs",
    "tensor_parallel_size",
    "enforce_eager",
    "gpu_memory_utilization",
)
SERVE_SOURCE = "vllm serve"


class _Refused(Exception):
    """The argument parser refused the command line (its own message)."""


def _serve_parser() -> tuple[argparse.ArgumentParser, bool]:
    """`vllm serve`'s own parser where vLLM is installed; without vLLM, one that knows only the flags
    of SERVE_FIELDS (and says so when refusing another); and whether it is vLLM's. Its errors raise
    instead of exiting."""
    try:
        from vllm.entrypoints.launchers.cli_args import make_arg_parser
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except ImportError:
        parser = argparse.ArgumentParser(prog="vllm serve (without vLLM installed: only its KV-capacity flags)")
        parser.add_argument("model_tag", nargs="?")
        parser.add_argument("--model")
        parser.add_argument("--served-model-name", nargs="+")
        for dest in SERVE_FIELDS:
            field = ModelSettings.model_fields[dest]
            flag = "--" + dest.replace("_", "-")
            if field.annotation is bool:
                parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=False)
            else:
                number = {"max_model_len": int, "block_size": int, "max_num_seqs": int, "tensor_parallel_size": int}
                kind = float if dest == "gpu_memory_utilization" else number.get(dest, str)
                parser.add_argument(flag, type=kind, default=field.default)
        with_vllm = False
    else:
        parser, with_vllm = make_arg_parser(FlexibleArgumentParser(prog="vllm serve")), True

    def refuse(status: int = 0, message: str | None = None) -> None:
        raise _Refused((message or "").strip())

    parser.exit = refuse  # type: ignore[method-assign,assignment]
    parser.print_usage = lambda file=None: None  # type: ignore[method-assign]
    return parser, with_vllm


def _serve_model_directory(given: str | None) -> str:
    """The model directory a serve command names: a directory, or the config.json inside one."""
    if not given:
        raise ConfigError(f"{SERVE_SOURCE}: no model: give a directory holding config.json (or that config.json)")
    path = Path(given).expanduser()
    if path.name == "config.json" and path.is_file():
        path = path.parent
    return str(path.resolve())


def _serve_name(served: Any, directory: str) -> str:
    """The model's name in results: --served-model-name, else the directory's, made a file name."""
    name = served[0] if isinstance(served, list) and served else Path(directory).name
    usable = "".join("-" if c in '/\\:*?"<>| ' or not c.isprintable() else c for c in name)
    return usable.lstrip(".")[:MAX_NAME_LENGTH]


def models_from_serve_command(command: Sequence[str]) -> list[ModelSettings]:
    """The one model a `vllm serve MODEL --flag value ...` command line serves, as ModelSettings: the
    same typed settings (and settings hash) as the equivalent models-file entry. Flags that are not
    engine arguments (the server's --host, --port, ...) do not change KV capacity and are left out;
    an unknown flag is refused with vLLM's own message. Without --max-model-len the model's
    max_position_embeddings is taken, as vLLM does."""
    words = list(command)
    for expected in ("vllm", "serve"):
        if words[:1] == [expected]:
            words = words[1:]
    parser, with_vllm = _serve_parser()
    try:
        parsed = vars(parser.parse_args(words))
    except _Refused as exc:
        raise ConfigError(str(exc) or f"{SERVE_SOURCE}: the command line was refused") from None
    directory = _serve_model_directory(parsed.get("model_tag") or parsed.get("model"))
    fields: dict[str, Any] = {"name": _serve_name(parsed.get("served_model_name"), directory), "model": directory}
    fields |= {dest: parsed[dest] for dest in SERVE_FIELDS if parsed.get(dest) is not None}
    if "max_model_len" not in fields:
        fields["max_model_len"] = _config_max_len(directory)
    known = known_engine_args() if with_vllm else frozenset()
    skipped = set(SERVE_FIELDS) | ENGINE_CONTROLLED_ARGS | {"served_model_name"}
    extra = {
        dest: value
        for dest, value in parsed.items()
        if dest in known and dest not in skipped and value != parser.get_default(dest)
    }
    if extra:
        fields["extra_engine_args"] = extra
    try:
        return [ModelSettings.model_validate(fields)]
    except ValidationError as exc:
        problems = [
            f"{SERVE_SOURCE}: field '{_field_path(e)}': {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()
        ]
        raise ConfigError("\n".join(problems)) from None


def _config_max_len(directory: str) -> Any:
    try:
        config = json.loads((Path(directory) / "config.json").read_bytes())
    except (OSError, ValueError):
        return None  # the model field's own check names the problem
    return config.get("max_position_embeddings") if isinstance(config, dict) else None


def load_model_source(
    models_file: str | None, serve_command: Sequence[str] | None, only: list[str] | None = None
) -> list[ModelSettings]:
    """The models a run measures: from a models file, or from one `vllm serve` command line."""
    if serve_command is not None:
        return models_from_serve_command(serve_command)
    if models_file is None:
        raise ConfigError("give a models file or a `vllm serve MODEL ...` command line after --")
    return load_models(models_file, only)
