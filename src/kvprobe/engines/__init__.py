"""Serving-engine adapters. vLLM is the one engine today; TensorRT-LLM would sit beside it."""

from __future__ import annotations

from kvprobe.engines.vllm import VllmEngine

ENGINES = {"vllm": VllmEngine}


def get_engine(name: str = "vllm") -> VllmEngine:
    return ENGINES[name]()
