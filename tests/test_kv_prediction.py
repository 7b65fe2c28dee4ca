"""The kv_blocks search's first guess where the KV cache is host memory (vLLM's CPU backend), checked
on a real run: `kvprobe container` with every search, tiny model, 4 GiB podman container, this
project's 2-core CPU machine, 2026-12-01 at 4031d12 (tests/data/kv-blocks-container/, journal and
result as the run wrote them).

That run's search guessed 458 blocks (the u_max start's headroom after its weights, less vLLM's
non-KV figure, which is the worker's resident set and was already in that headroom) and needed six
fill-tested starts to find 600 passing and 620 failing. The guess is now 622.
"""

from __future__ import annotations

from pathlib import Path

from journal_replay import CommittedRun, replay_run
from kvprobe.measure.estimates import predict_kv_blocks
from kvprobe.measure.model import find_trial
from kvprobe.results.loader import load_result

RUN = Path(__file__).parent / "data" / "kv-blocks-container"
JOURNAL = RUN / ".journal" / "20261201T065242-67d0.jsonl"
RESULT = RUN / "tiny-llama" / "container-20261201T065242-67d0-r1.json"


def kv_search(document) -> tuple[list, dict]:
    trials = [t for t in document.trials if t.search == "kv_blocks"]
    return trials, document.searches["kv_blocks"]


def test_the_guess_lies_within_one_step_of_the_boundary_the_real_run_found():
    recorded = load_result(RESULT)
    search = recorded.searches["kv_blocks"]
    assert (search.boundary, search.failing, search.tolerance) == (600, 620, 20)
    at_u_max = find_trial(recorded.trials, utilization=recorded.u_max, kv_cache_memory_bytes=None)  # as the search
    assert at_u_max is not None and at_u_max.confirmation == 1
    guess = predict_kv_blocks(at_u_max, recorded.options.guard)
    assert guess is not None
    assert search.boundary - search.tolerance <= guess <= search.failing + search.tolerance, guess


def test_replayed_with_the_guess_the_search_finds_the_same_boundary_in_half_the_starts(tmp_path):
    """Every start the search asks for is answered by the run's journal (a start it never made fails)."""
    replayed = replay_run(CommittedRun(JOURNAL, RESULT), tmp_path)
    (before_trials, before), (after_trials, after) = kv_search(replayed.committed), kv_search(replayed.rebuilt)
    assert (after.boundary, after.failing) == (before.boundary, before.failing) == (600, 620)
    assert (before.engine_starts, after.engine_starts) == (6, 3)
    assert len(before_trials) == 7 and len(after_trials) == 4  # each with its confirmation
    assert after.confirmed is before.confirmed is False  # the recorded second start at 600 hit the guard
    assert replayed.rebuilt.physical_capacity == replayed.committed.physical_capacity
