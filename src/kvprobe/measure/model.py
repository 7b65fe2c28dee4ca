"""One model, one repeat: the searches, each engine start asked of a `TrialExecutor`.

It returns what the searches found (`ModelFindings`); `results.build` turns that into the
result document. Nothing here formats output or writes files.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from kvprobe.config import ModelSettings
from kvprobe.engines.protocol import Engine
from kvprobe.engines.vllm_worker import fill_request_count
from kvprobe.errors import KvprobeError
from kvprobe.measure.estimates import (
    block_geometry,
    budget_total,
    engine_free_memory,
    predict_kv_blocks,
    predict_u_max,
    predict_u_min,
)
from kvprobe.measure.options import MeasureOptions
from kvprobe.predict import blocks_held_per_request, kv_groups
from kvprobe.results.schema import GuardSettings, TrialRecord
from kvprobe.search import SearchResult, find_boundary
from kvprobe.trial.executor import TrialExecutor, TrialRequest
from kvprobe.vocabulary import ABOVE_WINDOW, BELOW_WINDOW, RETRIED, Outcome, SearchName

U_MAX_FAILURES: tuple[Outcome, ...] = (*ABOVE_WINDOW, "error")
U_MIN_FAILURES: tuple[Outcome, ...] = BELOW_WINDOW
THROUGHPUT_WORKLOAD = {"requests": 16, "prompt_len": 64, "output_len": 64}


class OutsideWindow(KvprobeError):
    """A start was refused on the far side of the utilization window from the boundary searched."""


class EngineRefusedSettings(KvprobeError):
    """The engine refused its configuration (a `config-error` start): no boundary lies there, so the
    model's searches stop instead of steering by it."""

    def __init__(self, search: SearchName, reason: str):
        super().__init__(
            f"{search}: the engine refused the settings it was given (the models file's and kvprobe's); "
            f"the searches stopped: {reason}"
        )


@dataclass
class ModelFindings:
    """What one model's searches found, and every trial they started (replayed ones included)."""

    trials: list[TrialRecord] = field(default_factory=list)
    reference: TrialRecord | None = None
    searches: dict[SearchName, SearchResult] = field(default_factory=dict)
    at_u_max: TrialRecord | None = None
    physical: TrialRecord | None = None
    throughput: TrialRecord | None = None
    utilization_range: tuple[float, float] = (0.0, 1.0)
    errors: list[str] = field(default_factory=list)


def fill_scheduler_overrides(requests: int, max_num_seqs: int | None, max_num_batched_tokens: int | None) -> dict:
    """Scheduler settings that let the fill's `requests` run at once. vLLM refuses a max_num_seqs above
    max_num_batched_tokens (its SchedulerConfig check), so the batched-token limit rises with it
    where the u_max start's engine had less; more of either only adds non-KV memory, which makes the
    physical capacity found conservative, never larger."""
    seqs = max(max_num_seqs or 0, requests)
    overrides = {"max_num_seqs": seqs}
    if max_num_batched_tokens is not None and seqs > max_num_batched_tokens:
        overrides["max_num_batched_tokens"] = seqs
    return overrides


def find_trial(trials: list[TrialRecord], **match) -> TrialRecord | None:
    """The last passing trial whose fields equal `match`."""
    for trial in reversed(trials):
        if trial.passed and all(getattr(trial, k) == v for k, v in match.items()):
            return trial
    return None


@dataclass(eq=False)
class ModelSearches:
    """The searches of one model and repeat; every engine start goes through `executor`, whose
    guard has the floors `guard` records."""

    settings: ModelSettings
    repeat: int
    executor: TrialExecutor
    engine: Engine
    options: MeasureOptions
    guard: GuardSettings
    trials: list[TrialRecord] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self._request = functools.partial(
            TrialRequest,
            number=0,
            usage_context=self.engine.usage_context(self.settings),
            model=self.settings.name,
            repeat=self.repeat,
        )

    # --- trials ------------------------------------------------------------------------------
    def trial(
        self,
        search: SearchName,
        *,
        confirmation: int = 0,
        overrides: dict | None = None,
        utilization: float | None = None,
        kv_bytes: int | None = None,
        fill: float | None = None,
        throughput: dict | None = None,
    ) -> TrialRecord:
        """One engine start (a timed-out or stalled one is tried again `options.retries` times)."""
        engine_args = {
            **self.engine.engine_args(self.settings, utilization, kv_cache_memory_bytes=kv_bytes),
            **(overrides or {}),
        }
        request = self._request(search=search, engine_args=engine_args, confirmation=confirmation)
        request = dataclasses.replace(request, utilization=utilization, kv_cache_memory_bytes=kv_bytes)
        request = dataclasses.replace(request, fill_target=fill, throughput=throughput)
        for attempt in range(1 + self.options.retries):
            record = self.executor.run(dataclasses.replace(request, attempt=attempt))
            self.trials.append(record)
            if record.outcome not in RETRIED:
                break
        if record.outcome == "config-error":
            raise EngineRefusedSettings(search, record.reason)
        return record

    def utilization_trials(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.is_utilization_start]

    def ok_trials(self) -> list[TrialRecord]:
        return [t for t in self.utilization_trials() if t.passed]

    def known_utilizations(self, failures: tuple[Outcome, ...]) -> list[tuple[float, bool]]:
        """Earlier starts as search evidence: passes, and the failures that bound this search.

        A start refused for too little KV says nothing about u_max, and one refused for too much
        memory says nothing about u_min.
        """
        return [
            (t.utilization, t.passed)
            for t in self.utilization_trials()
            if t.utilization is not None and (t.passed or t.outcome in failures)
        ]

    # --- searches ----------------------------------------------------------------------------
    def run_reference(self) -> TrialRecord:
        return self.trial("reference", utilization=self.settings.gpu_memory_utilization)

    def search_u_max(self, lo: float, hi: float) -> SearchResult:
        start = self.settings.gpu_memory_utilization if self.options.strategy == "bracketed" else None
        return self._utilization_search(
            "u_max", lo, hi, lambda: start, self._predictor(lambda: predict_u_max(self.trials))
        )

    def search_u_min(self, lo: float, hi: float) -> SearchResult:
        def start() -> float | None:
            bracketed = self.options.strategy == "bracketed"
            lowest = min((t.utilization for t in self.ok_trials() if t.utilization is not None), default=None)
            return lowest if bracketed else None

        predict = self._predictor(lambda: predict_u_min(self.ok_trials(), self.settings.max_model_len))
        return self._utilization_search("u_min", lo, hi, start, predict, passing_below=False)

    def _utilization_search(
        self,
        search: SearchName,
        lo: float,
        hi: float,
        start: Callable[[], float | None],
        predict: Callable[[], float | None] | None,
        passing_below: bool = True,
    ) -> SearchResult:
        """find_boundary over [lo, hi] narrowed past every start refused on the far side of the window.

        A start refused for too little KV lies below u_max, not above it (and one refused for too
        much memory lies above u_min): it moves the search range, it is not the boundary. When the
        search meets such a refusal it starts again on the narrower range, reusing every start so far.
        """
        far_side, failures = (BELOW_WINDOW, U_MAX_FAILURES) if passing_below else (ABOVE_WINDOW, U_MIN_FAILURES)
        tolerance = self.options.tolerance

        def probe(u: float) -> bool:
            trial = self.trial(search, utilization=u)
            if trial.outcome in far_side:
                raise OutsideWindow(trial.utilization)
            return trial.passed

        while True:
            refused = [
                t.utilization for t in self.utilization_trials() if t.utilization is not None and t.outcome in far_side
            ]
            if passing_below:
                lo = round(max([lo] + [u + tolerance for u in refused]), 10)
            else:
                hi = round(min([hi] + [u - tolerance for u in refused]), 10)
            if not lo < hi:
                return SearchResult(passing=None, failing=None, tolerance=tolerance)
            first = start()
            try:
                return find_boundary(
                    probe,
                    lo,
                    hi,
                    tolerance,
                    passing_below=passing_below,
                    start=first if first is not None and lo <= first <= hi else None,
                    predict=predict,
                    known=self.known_utilizations(failures),
                )
            except OutsideWindow:
                continue

    def search_kv_blocks(self, at_u_max: TrialRecord, hi_fraction: float) -> SearchResult | None:
        """Largest explicit KV budget (in blocks) that starts and survives the fill test: from below
        (u_max's budget first) or, where a budget that does not fit fails cheaply, from above
        (`options.kv_approach`)."""
        geometry = block_geometry(at_u_max)
        if geometry is None or at_u_max.block_size is None:
            return None
        bytes_per_block, blocks_at_u_max = geometry
        free_for_engine = engine_free_memory(at_u_max)
        need = math.ceil(self.settings.max_model_len / at_u_max.block_size)
        if free_for_engine:
            hi = max(blocks_at_u_max + 1, int(free_for_engine * hi_fraction / bytes_per_block))
        else:
            hi = blocks_at_u_max * 2
        total = budget_total(at_u_max) or free_for_engine or bytes_per_block * hi
        tolerance = max(1, round(self.options.tolerance * total / bytes_per_block))
        predicted = predict_kv_blocks(at_u_max, self.guard)

        def probe(blocks: float) -> bool:
            return self.kv_blocks_trial(int(blocks), at_u_max).passed

        return find_boundary(
            probe,
            need,
            hi,
            tolerance,
            start=blocks_at_u_max,
            integer=True,
            predict=self._predictor(lambda: predicted) if predicted else None,
            failures_cheap=self.options.kv_approach == "from_above",
        )

    def kv_blocks_trial(self, blocks: int, at_u_max: TrialRecord, confirmation: int = 0) -> TrialRecord:
        """An explicit KV budget of `blocks`, filled. The fill needs every request in flight at once;
        more sequences than the model's setting only add non-KV memory, so the capacity found is, if
        anything, conservative."""
        geometry = block_geometry(at_u_max)
        assert geometry is not None and at_u_max.block_size is not None, "search_kv_blocks checked both"
        bytes_per_block, _ = geometry
        groups = kv_groups(self.settings.hf_config())
        per_request = blocks_held_per_request(groups, at_u_max.block_size, self.settings.max_model_len)
        requests = fill_request_count(blocks, per_request)
        overrides = fill_scheduler_overrides(
            requests, self.settings.max_num_seqs, at_u_max.worker.max_num_batched_tokens
        )
        return self.trial(
            "kv_blocks",
            kv_bytes=blocks * bytes_per_block,
            fill=self.options.fill_target,
            overrides=overrides,
            confirmation=confirmation,
        )

    def confirm(self, search: SearchName, result: SearchResult, at_u_max: TrialRecord | None = None) -> None:
        """Start the boundary's passing setting once more: near a hard wall a start's fate is partly
        chance, and a boundary that does not pass twice is reported as unstable."""
        passing = result.passing
        if not (result.converged and self.options.confirm) or passing is None:
            return  # a search that ended at its range's edge met no wall: nothing to confirm
        if search == "kv_blocks":
            assert at_u_max is not None, "a kv_blocks boundary is confirmed with the u_max start it searched from"
            again = self.kv_blocks_trial(int(passing), at_u_max, confirmation=1)
        else:
            again = self.trial(search, utilization=passing, confirmation=1)
        result.confirmed = again.passed

    def _predictor(self, predict: Callable[[], float | None]) -> Callable[[], float | None] | None:
        return predict if self.options.strategy == "bracketed" else None

    # --- all of them -------------------------------------------------------------------------
    def run(self) -> ModelFindings:
        """The chosen searches in order: reference, u_max, u_min, kv_blocks, then throughput."""
        lo, hi = self.options.utilization_range or self.settings.utilization_range
        found = ModelFindings(trials=self.trials, utilization_range=(lo, hi))
        try:
            self._run_searches(found, lo, hi)
        except EngineRefusedSettings as refused:
            found.errors.append(str(refused))
            return found
        found.errors += self._missing_figures(found)
        return found

    def _run_searches(self, found: ModelFindings, lo: float, hi: float) -> None:
        options = self.options

        if "reference" in options.searches:
            found.reference = self.run_reference()
            if found.reference.outcome == "error":
                found.errors.append(f"reference start failed: {found.reference.reason}")
                return  # the engine cannot start at all: every search would fail the same way

        if "u_max" in options.searches:
            u_max = found.searches["u_max"] = self.search_u_max(lo, hi)
            if u_max.passing is None:
                found.errors.append(f"no utilization in [{lo}, {hi}] started the engine")
            else:
                self.confirm("u_max", u_max)
                found.at_u_max = find_trial(self.trials, utilization=u_max.passing, kv_cache_memory_bytes=None)

        if "u_min" in options.searches and not found.errors:
            u_min = found.searches["u_min"] = self.search_u_min(lo, hi)
            self.confirm("u_min", u_min)

        if "kv_blocks" in options.searches and found.at_u_max is not None:
            kv_blocks = self.search_kv_blocks(found.at_u_max, hi)
            if kv_blocks is not None:
                found.searches["kv_blocks"] = kv_blocks
                self.confirm("kv_blocks", kv_blocks, found.at_u_max)
                geometry = block_geometry(found.at_u_max)
                if kv_blocks.passing is not None and geometry is not None:
                    bytes_per_block, _ = geometry
                    found.physical = find_trial(
                        self.trials, search="kv_blocks", kv_cache_memory_bytes=int(kv_blocks.passing) * bytes_per_block
                    )

        if options.throughput and found.at_u_max is not None:
            found.throughput = self.trial(
                "throughput", utilization=found.at_u_max.utilization, throughput=THROUGHPUT_WORKLOAD
            )

    def _missing_figures(self, found: ModelFindings) -> list[str]:
        """A result is complete only if every figure its searches promise is there."""
        missing = []
        reference = found.reference
        if reference is not None and not reference.passed and reference.outcome != "error":
            said = f" ({reference.reason})" if reference.reason else ""
            missing.append(f"reference start measured nothing: {reference.outcome}{said}")
        u_max, u_min, kv_blocks = (found.searches.get(name) for name in ("u_max", "u_min", "kv_blocks"))
        if u_max is not None and u_max.passing is not None and found.at_u_max is None:
            missing.append(f"u_max {u_max.passing} passed, but no passing trial at it was found")
        if u_min is not None and u_min.passing is None:
            missing.append("u_min: no utilization in the range held one max_model_len request")
        if "kv_blocks" in self.options.searches and found.at_u_max is not None and found.physical is None:
            reason = "no budget passed its fill test" if kv_blocks else "the u_max start reported no KV blocks"
            missing.append(f"physical KV capacity: {reason}")
        if found.throughput is not None and not found.throughput.passed:
            missing.append(f"throughput start failed: {found.throughput.reason}")
        return missing
