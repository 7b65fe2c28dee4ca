"""Write a real safetensors checkpoint of random values for a Llama-style config.json.

    python scripts/make_random_weights.py configs/tiny-llama-1g .weights/tiny-llama-1g

A weightless start (load_format: dummy) cannot show what the weight files' page cache does to
the KV cache; this checkpoint can, and costs no download. Values are random (std 0.02), so the
model's output means nothing; only its bytes matter. The dtype is the config's torch_dtype.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file


def llama_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    hidden, vocab = config["hidden_size"], config["vocab_size"]
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
    head_dim = config.get("head_dim", hidden // heads)
    inner = config["intermediate_size"]
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,)}
    for layer in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{layer}."
        shapes |= {
            prefix + "self_attn.q_proj.weight": (heads * head_dim, hidden),
            prefix + "self_attn.k_proj.weight": (kv_heads * head_dim, hidden),
            prefix + "self_attn.v_proj.weight": (kv_heads * head_dim, hidden),
            prefix + "self_attn.o_proj.weight": (hidden, heads * head_dim),
            prefix + "mlp.gate_proj.weight": (inner, hidden),
            prefix + "mlp.up_proj.weight": (inner, hidden),
            prefix + "mlp.down_proj.weight": (hidden, inner),
            prefix + "input_layernorm.weight": (hidden,),
            prefix + "post_attention_layernorm.weight": (hidden,),
        }
    if not config.get("tie_word_embeddings", False):
        shapes["lm_head.weight"] = (vocab, hidden)
    return shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config_dir", type=Path, help="A directory holding a Llama-style config.json.")
    parser.add_argument("out_dir", type=Path, help="Where config.json and model.safetensors are written.")
    args = parser.parse_args()
    config = json.loads((args.config_dir / "config.json").read_text())
    dtype = getattr(torch, config.get("torch_dtype", "float32"))
    generator = torch.Generator().manual_seed(0)
    tensors = {
        name: (torch.randn(shape, generator=generator) * 0.02).to(dtype)
        if len(shape) > 1
        else torch.ones(shape, dtype=dtype)
        for name, shape in llama_shapes(config).items()
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out_dir / "model.safetensors"), metadata={"format": "pt"})
    shutil.copyfile(args.config_dir / "config.json", args.out_dir / "config.json")
    size = (args.out_dir / "model.safetensors").stat().st_size
    print(f"wrote {args.out_dir / 'model.safetensors'}: {size} bytes, {len(tensors)} tensors")


if __name__ == "__main__":
    main()
