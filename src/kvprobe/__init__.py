"""kvprobe: measures how much KV cache an LLM serving engine really gets, natively and in containers."""

__version__ = "0.2.0"
