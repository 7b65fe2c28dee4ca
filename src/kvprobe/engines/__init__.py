"""Serving-engine adapters: vLLM, and TensorRT-LLM (not run against a real TensorRT-LLM here)."""

from __future__ import annotations

import importlib.util
from typing import Literal, overload

from kvprobe.engines.trtllm import TrtllmEngine
from kvprobe.engines.vllm import VllmEngine
from kvprobe.vocabulary import EngineName

ENGINES: dict[EngineName, type[VllmEngine] | type[TrtllmEngine]] = {
    "vllm": VllmEngine,
    "tensorrt-llm": TrtllmEngine,
}

# The module each engine's worker imports, and where to get it: one sentence each.
_ENGINE_MODULES: dict[EngineName, tuple[str, str]] = {
    "vllm": (
        "vllm",
        "vLLM (engine: vllm) is not installed in this Python environment; install it with pip install vllm.",
    ),
    "tensorrt-llm": (
        "tensorrt_llm",
        "TensorRT-LLM (engine: tensorrt-llm) is not installed in this Python environment; run kvprobe inside "
        "NVIDIA's TensorRT-LLM container image (nvcr.io/nvidia/tensorrt-llm/release) or install it with "
        "pip install tensorrt-llm --extra-index-url https://pypi.nvidia.com (PyPI alone serves only a stub).",
    ),
}


@overload
def get_engine(name: Literal["vllm"] = "vllm") -> VllmEngine: ...
@overload
def get_engine(name: Literal["tensorrt-llm"]) -> TrtllmEngine: ...
@overload
def get_engine(name: EngineName) -> VllmEngine | TrtllmEngine: ...
def get_engine(name: EngineName = "vllm") -> VllmEngine | TrtllmEngine:
    """A fresh adapter of engine `name` (the overloads give each name its adapter's type)."""
    return ENGINES[name]()


def engine_unavailable(name: EngineName) -> str | None:
    """One sentence naming the engine and how to get it, where its module cannot be imported here."""
    module, sentence = _ENGINE_MODULES[name]
    return None if importlib.util.find_spec(module) is not None else sentence
