"""The engines' sizing equations and their decomposition, on numbers worked by hand."""

from __future__ import annotations

import pytest

from kvprobe.engines.sizing import TrtllmInputs, VllmCpuInputs, VllmCudaInputs, VllmIntegratedInputs, decompose
from kvprobe.units import GIB, MIB


def test_vllm_cuda_is_utilization_times_total_less_non_kv():
    # ceil(0.5 x 80 GiB) = 40 GiB; 40 - 15 = 25 GiB
    assert VllmCudaInputs(0.5, 80 * GIB, 15 * GIB).predict().kv_bytes == 25 * GIB


def test_vllm_integrated_charges_the_drop_in_mem_available():
    # ceil(0.75 x 100 GiB) = 75 GiB; MemAvailable 110 -> 95 GiB consumed 15; transient 1: 75 - 15 - 1 = 59 GiB
    inputs = VllmIntegratedInputs(0.75, 100 * GIB, 110 * GIB, 95 * GIB, 1 * GIB)
    assert inputs.predict().kv_bytes == 59 * GIB


def test_vllm_cpu_clamps_to_a_visible_cgroup_limit_only():
    # 64 GiB node, limit 32 GiB: ceil(0.5 x 32) - 4 resident = 12 GiB; unseen limit: 0.5 x 64 - 4 = 28 GiB
    assert VllmCpuInputs(0.5, 64 * GIB, 4 * GIB, 32 * GIB).predict().kv_bytes == 12 * GIB
    assert VllmCpuInputs(0.5, 64 * GIB, 4 * GIB, None).predict().kv_bytes == 28 * GIB
    assert "cgroup limit" in VllmCpuInputs(0.5, 64 * GIB, 4 * GIB, 32 * GIB).predict().equation


def test_trtllm_is_a_fraction_of_free_memory_capped_by_tokens_and_bytes():
    # 0.5 x (100 - 60 + 2) GiB = 21 GiB
    base = TrtllmInputs(0.5, 100 * GIB, 60 * GIB, 2 * GIB)
    assert base.predict().kv_bytes == 21 * GIB
    # max_tokens 1000 x 1 MiB per token = 1000 MiB < 21 GiB
    capped = TrtllmInputs(0.5, 100 * GIB, 60 * GIB, 2 * GIB, bytes_per_token=MIB, max_tokens=1000)
    assert capped.predict().kv_bytes == 1000 * MIB
    assert TrtllmInputs(0.5, 100 * GIB, 60 * GIB, 2 * GIB, max_gpu_total_bytes=10 * GIB).predict().kv_bytes == 10 * GIB
    # max_gpu_total_bytes 0 is KvCacheConfig's "no cap"
    assert TrtllmInputs(0.5, 100 * GIB, 60 * GIB, 2 * GIB, max_gpu_total_bytes=0).predict().kv_bytes == 21 * GIB


def test_decompose_is_exact_for_additive_inputs():
    # peak 60 -> 70 GiB at fraction 0.5: -5 GiB, all of it the peak's, residual 0
    parts = decompose(TrtllmInputs(0.5, 100 * GIB, 60 * GIB, 0), TrtllmInputs(0.5, 100 * GIB, 70 * GIB, 0))
    assert parts.contributions == {"peak_bytes": -5 * GIB}
    assert parts.residual == 0
    assert parts.kv_after - parts.kv_before == -5 * GIB


def test_decompose_leaves_a_product_interaction_in_the_residual():
    # before 0.5 x 80 - 15 = 25 GiB; after 0.75 x 96 - 15 = 57 GiB: +32 GiB
    # utilization alone: 0.75 x 80 - 15 = 45 (+20); total alone: 0.5 x 96 - 15 = 33 (+8); residual 0.25 x 16 = 4
    parts = decompose(VllmCudaInputs(0.5, 80 * GIB, 15 * GIB), VllmCudaInputs(0.75, 96 * GIB, 15 * GIB))
    assert parts.contributions == {"utilization": 20 * GIB, "total_bytes": 8 * GIB}
    assert parts.residual == 4 * GIB


def test_decompose_refuses_two_different_equations():
    with pytest.raises(TypeError):
        decompose(VllmCudaInputs(0.5, GIB, 0), TrtllmInputs(0.5, GIB, 0, 0))
