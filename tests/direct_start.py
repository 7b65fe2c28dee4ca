"""A plain vLLM start, without kvprobe: exit 0 when the engine starts and generates.

python tests/direct_start.py MODEL_DIR UTILIZATION MAX_MODEL_LEN DTYPE MAX_NUM_SEQS
"""

import sys

if __name__ == "__main__":
    from vllm import LLM, SamplingParams

    model, utilization, max_model_len, dtype, max_num_seqs = sys.argv[1:6]
    llm = LLM(
        model=model,
        load_format="dummy",
        skip_tokenizer_init=True,
        dtype=dtype,
        enforce_eager=True,
        max_model_len=int(max_model_len),
        max_num_seqs=int(max_num_seqs),
        gpu_memory_utilization=float(utilization),
    )
    out = llm.generate([{"prompt_token_ids": list(range(20, 36))}], SamplingParams(max_tokens=8, ignore_eos=True))
    assert len(out[0].outputs[0].token_ids) == 8
    print("DIRECT_START_OK", flush=True)
