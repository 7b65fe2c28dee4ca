"""vLLM's engine argument names, read from its source without importing it (no torch, no CUDA)."""

from __future__ import annotations

import ast
import importlib.util
from functools import lru_cache
from pathlib import Path

from kvprobe.errors import InputError

# Arguments the probe sets on every trial; a models file may not override them.
ENGINE_CONTROLLED_ARGS = frozenset(
    {
        "model",
        "kv_cache_memory_bytes",
        "num_gpu_blocks_override",
        "skip_tokenizer_init",
    }
)


class EngineNotInstalled(InputError):
    """vLLM cannot be found in this Python environment."""


@lru_cache(maxsize=1)
def known_engine_args() -> frozenset[str]:
    """Field names of vllm.engine.arg_utils.EngineArgs, parsed from the installed source file."""
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        raise EngineNotInstalled("vLLM is not installed here; extra_engine_args cannot be checked")
    source = Path(next(iter(spec.submodule_search_locations))) / "engine" / "arg_utils.py"
    tree = ast.parse(source.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name in {"EngineArgs", "AsyncEngineArgs"}:
            for statement in node.body:
                if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
                    names.add(statement.target.id)
    if not names:
        raise EngineNotInstalled(f"found no EngineArgs fields in {source}")
    return frozenset(names)
