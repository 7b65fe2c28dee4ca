"""The versioned result loader: every committed version-1 file loads and gives the report numbers
kvprobe 0.1 computed from it (tests/data/report-before-v2/), and what is not a result is refused
with a sentence naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvprobe.report.summary import build_report
from kvprobe.results.loader import ResultFileError, load_result, parse_result
from kvprobe.results.schema import SCHEMA_VERSION, ResultDocument
from kvprobe.results.store import ResultStore
from synthetic import documents

ROOT = Path(__file__).resolve().parents[1]
BEFORE = Path(__file__).parent / "data" / "report-before-v2"
COMMITTED = {"cpu": ROOT / "tests" / "data" / "results", "h100": ROOT / "docs" / "gpu-h100" / "results"}
# What changed on purpose since 0.1, and is checked elsewhere:
REPLACED = {
    "advice",  # sentences then; findings (numbers) now, the layout writes the sentences
    "comparison",  # ratios and percentages of KV from exact blocks, bounds kept out, verdicts (test_exact_figures.py)
    "peak_memory_bytes",  # one row that mixed two accounts; now each account its own row (test_exact_figures.py)
    "metrics",  # units named for what they are: "fraction" for u_max, "requests" for concurrency
    "runs",  # every run of every condition, now once in the summary (runs.csv), not per pair
}


def numbers_equal(before, after, path: str = "") -> list[str]:
    """Every value of the 0.1 summary, found unchanged in today's (a list of differences)."""
    if isinstance(before, dict) and isinstance(after, dict):
        missing = [f"{path}.{k}: missing" for k in before if k not in after and k not in REPLACED]
        kept = [k for k in before if k in after and k not in REPLACED]
        return missing + [d for k in kept for d in numbers_equal(before[k], after[k], f"{path}.{k}")]
    if isinstance(before, list):
        if len(before) != len(after):
            return [f"{path}: {len(before)} items before, {len(after)} now"]
        pairs = enumerate(zip(before, after, strict=True))
        return [d for i, (a, b) in pairs for d in numbers_equal(a, b, f"{path}[{i}]")]
    if isinstance(before, float) and isinstance(after, float):  # t quantiles now SciPy's: the last digit may move
        return [] if after == pytest.approx(before, rel=1e-12) else [f"{path}: {before!r} before, {after!r} now"]
    return [] if before == after else [f"{path}: {before!r} before, {after!r} now"]


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_committed_version_1_results_give_the_same_report_numbers(name):
    paths = sorted(COMMITTED[name].glob("*/*.json"))
    assert paths and all(json.loads(p.read_text())["schema_version"] == 1 for p in paths)
    loaded, problems = ResultStore(COMMITTED[name]).load_all()
    assert problems == [] and len(loaded) == len(paths)
    assert all(doc.schema_version == SCHEMA_VERSION for _, doc in loaded)
    summary = build_report([doc for _, doc in loaded]).model_dump(mode="json")
    before = json.loads((BEFORE / f"{name}-summary.json").read_text())
    assert numbers_equal(before, summary) == []


def test_a_result_written_today_reads_back_equal(tmp_path):
    store = ResultStore(tmp_path)
    document = documents()[0]
    path = store.result_path(document.model, document.label, document.run_id, document.repeat)
    store.write_result(path, document)
    assert load_result(path) == document
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "model" / "native-x-r1.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text,says",
    [
        ('{"schema_version": 99}', "schema_version 99 (written by a newer kvprobe) is not one this kvprobe reads"),
        ('{"schema_version": 0}', "schema_version 0 is not one this kvprobe reads"),
        ("[1, 2]", "not a kvprobe result (expected a JSON object, got list)"),
        ('{"model": "x"}', "not a kvprobe result (no schema_version)"),
        ('{"schema_version": 2, "model": "x"}', "not a valid kvprobe result: field 'run_id': Field required"),
        ('{"schema_version": 1, "repeat": NaN}', "not valid JSON (NaN is not a number a result can hold"),
        ('{"schema_version": 2, "run', "not valid JSON"),
    ],
)
def test_what_is_not_a_result_is_refused_with_a_sentence_naming_the_file(tmp_path, text, says):
    path = write(tmp_path, text)
    with pytest.raises(ResultFileError) as refused:
        load_result(path)
    assert str(refused.value).startswith(f"{path}: ") and says in str(refused.value)


def test_a_fifo_named_like_a_result_is_refused_without_opening_it(tmp_path):
    import os

    path = tmp_path / "model" / "native-x-r1.json"
    path.parent.mkdir()
    os.mkfifo(path)
    with pytest.raises(ResultFileError, match="not a regular file"):
        load_result(path)


def test_the_store_lists_every_unusable_file_and_keeps_the_good_ones(tmp_path):
    store = ResultStore(tmp_path)
    good = documents()[0]
    store.write_result(store.result_path(good.model, good.label, good.run_id, good.repeat), good)
    write(tmp_path, '{"schema_version": 99}')
    loaded, problems = store.load_all()
    assert [doc for _, doc in loaded] == [good]
    assert len(problems) == 1 and "schema_version 99" in problems[0]


def test_parse_result_upgrades_a_version_1_document_in_memory():
    v1 = json.loads(next(COMMITTED["cpu"].glob("*/*.json")).read_text())
    assert v1["schema_version"] == 1
    upgraded = parse_result(v1)
    assert isinstance(upgraded, ResultDocument) and upgraded.schema_version == SCHEMA_VERSION == 4
    assert upgraded.condition == upgraded.label
    assert upgraded.reference.bytes == v1["reference"]["bytes"]


def test_the_false_non_monotone_flag_of_0_1_is_recomputed_from_the_trials():
    """0.1 counted the u_max search's out-of-memory starts as evidence against u_min."""
    path = next(COMMITTED["h100"].glob("*/native-*.json"))
    assert json.loads(path.read_text())["searches"]["u_min"]["non_monotone"] is True  # as 0.1 wrote it
    assert load_result(path).searches["u_min"].non_monotone is False
