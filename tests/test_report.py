"""`kvprobe report` on committed result files from real vLLM CPU runs (native and podman, 3 repeats each).

Every number is recomputed here independently (Python's statistics module), and every output format
is parsed back: Markdown table columns, CSV rows, JSON keys, the HTML page in headless Chromium.
"""

from __future__ import annotations

import csv
import json
import shutil
import statistics
import subprocess
from pathlib import Path
from xml.etree import ElementTree

import pytest

from conftest import kvprobe

DATA = Path(__file__).parent / "data" / "results"
GIB = 1 << 30


def documents() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(DATA.glob("*/*.json"))]


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    kvprobe("report", str(DATA), "--out", str(out), "--title", "Test report")
    return out


def by_label(model: str) -> dict[str, list[dict]]:
    runs = {"native": [], "container": []}
    for doc in documents():
        if doc["model"] == model:
            runs[doc["label"]].append(doc)
    return runs


def test_the_committed_data_is_real_and_repeated():
    docs = documents()
    assert len([d for d in docs if d["label"] == "native"]) >= 3
    assert len([d for d in docs if d["label"] == "container"]) >= 3
    for doc in docs:
        assert doc["versions"]["vllm"] and doc["trials"], doc["run_id"]
        assert all(t["log_tail"] for t in doc["trials"])


def test_summary_numbers_match_an_independent_computation(report_dir):
    summary = json.loads((report_dir / "summary.json").read_text())
    (model,) = summary["models"]
    runs = by_label(model["model"])
    for label in ("native", "container"):
        kv = [d["reference"]["bytes"] for d in runs[label]]
        stat = model["stats"][label]["kv_reference_bytes"]
        assert stat["n"] == len(kv)
        assert stat["mean"] == pytest.approx(statistics.mean(kv))
        assert stat["sd"] == pytest.approx(statistics.stdev(kv))
        u_max = [d["u_max"] for d in runs[label]]
        assert model["stats"][label]["u_max"]["mean"] == pytest.approx(statistics.mean(u_max))
    comparison = model["comparison"]["kv_reference_bytes"]
    native = statistics.mean(d["reference"]["bytes"] for d in runs["native"])
    container = statistics.mean(d["reference"]["bytes"] for d in runs["container"])
    assert comparison["change"] == pytest.approx(container - native)  # native is the reference
    # Ratios and percentages from blocks (exact), not from bytes the engine logged with two decimals.
    native_blocks = statistics.mean(d["reference"]["num_blocks"] for d in runs["native"])
    container_blocks = statistics.mean(d["reference"]["num_blocks"] for d in runs["container"])
    assert comparison["change_percent"] == pytest.approx(100 * (container_blocks - native_blocks) / native_blocks)
    assert comparison["ratio"] == pytest.approx(container_blocks / native_blocks)
    spread = [statistics.stdev(d["reference"]["bytes"] for d in runs[label]) for label in ("native", "container")]
    if spread == [0, 0]:  # every repeat gave the same KV: no test statistic without variance
        assert comparison["welch"]["verdict"] == "no_variance" and comparison["welch"]["p_value"] is None
    else:
        welch = comparison["welch"]
        assert 0 <= welch["p_value"] <= 1 and welch["ci95_low"] < container - native < welch["ci95_high"]
    assert set(summary) >= {"models", "unmatched", "metrics", "documents"}


def markdown_tables(text: str) -> list[list[list[str]]]:
    tables, current = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            current.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif current:
            tables.append(current)
            current = []
    return tables + ([current] if current else [])


def test_markdown_tables_parse_and_carry_the_numbers(report_dir):
    text = (report_dir / "report.md").read_text()
    assert text.startswith(
        "# Test report\n"
    )  # without --front-matter: a titled report.md (tests/test_hugo.py: the bundle)
    tables = markdown_tables(text)
    headline = tables[0]
    assert headline[0] == ["model", "KV native (GiB)", "KV container (GiB)", "lost", "lost %", "native/container", "p"]
    assert all(len(row) == len(headline[0]) for row in headline)
    model = headline[2][0]
    runs = by_label(model)
    native = statistics.mean(d["reference"]["bytes"] for d in runs["native"]) / GIB
    assert headline[2][1] == f"{native:.2f}"
    for chart in ("kv_cache", "utilization_window", "memory_breakdown"):
        assert f"]({chart}.png)" in text
    assert "n = 3 native and 3 container runs" in text


def test_where_the_memory_went_adds_up_to_the_pool(report_dir):
    for doc in documents():  # real runs: the independent accounts agree within 1% of the pool
        attribution = doc["attribution"]
        assert abs(attribution["unexplained_bytes"]) <= 0.01 * attribution["total_bytes"], doc["run_id"]
    text = (report_dir / "report.md").read_text()
    (table,) = [t for t in markdown_tables(text) if t[0] == ["part", "native", "container", "difference"]]
    total = float(text.split("host memory, ")[1].split(" GiB")[0])
    rows = table[2:]
    assert rows[-1][0] == "unexplained"
    for column in (1, 2):
        assert sum(float(row[column]) for row in rows) == pytest.approx(total, abs=0.005 * len(rows))


def test_csv_has_one_row_per_run(report_dir):
    with open(report_dir / "runs.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(documents())
    assert {r["label"] for r in rows} == {"native", "container"}
    first = next(d for d in documents() if d["label"] == "native")
    row = next(r for r in rows if r["run_id"] == first["run_id"] and int(r["repeat"]) == first["repeat"])
    assert float(row["kv_reference_bytes [bytes]"]) == first["reference"]["bytes"]
    # a u_max at the top of its range is flagged as a bound in every row, with what set each u_max
    assert row["u_max_lower_bound"] == str(first["searches"]["u_max"]["censored"])
    assert {r["u_max_boundary"] for r in rows} <= {"engine-refused", "top-of-range", "guard", "engine-oom"}


def test_chart_files_are_valid_images(report_dir):
    from PIL import Image

    for chart in ("kv_cache", "utilization_window", "memory_breakdown"):
        with Image.open(report_dir / f"{chart}.png") as image:
            image.verify()
        with Image.open(report_dir / f"{chart}.png") as image:
            assert image.size[0] > 300 and image.size[1] > 150
        root = ElementTree.parse(report_dir / f"{chart}.svg").getroot()
        assert root.tag.endswith("svg")


def test_html_is_self_contained_and_renders_in_headless_chromium(report_dir, tmp_path):
    page = (report_dir / "report.html").read_text()
    assert page.count("<svg") == 3
    for external in ('src="http', "src='http", "<link", "url(http", "@import", "<script"):
        assert external not in page  # nothing to fetch: namespace URIs inside the SVGs are names, not loads
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed (scripts/setup-cpu.sh installs it)")
    shot = tmp_path / "page.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1200,1600",
            (report_dir / "report.html").as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    from PIL import Image

    with Image.open(shot) as image:
        grey = image.convert("L")
        histogram = grey.histogram()
    dark = sum(histogram[:200]) / sum(histogram)
    assert dark > 0.01, "the screenshot is blank"


def test_unmatched_results_are_listed_not_mixed(tmp_path):
    data = tmp_path / "results"
    shutil.copytree(DATA, data)
    doc = json.loads(next(data.glob("*/native-*.json")).read_text())
    doc["settings_hash"] = "0000000000000000"
    doc["run_id"] = "other"
    (data / doc["model"] / "native-other-r1.json").write_text(json.dumps(doc))
    out = tmp_path / "report"
    done = kvprobe("report", str(data), "--out", str(out), "--format", "json")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"][0]["n"]["native"] == len(by_label(doc["model"])["native"])
    assert any("no container counterpart" in p for p in summary["unmatched"])
    assert "not compared" in done.stdout


def test_report_never_runs_an_engine(tmp_path, monkeypatch):
    done = kvprobe("report", str(tmp_path), check=False)
    assert done.returncode == 2 and "no kvprobe result files" in done.stderr


def test_peak_memory_compares_like_with_like(report_dir):
    """One row per account: host memory in use on both sides; the cgroup's peak only where one was read."""
    text = (report_dir / "report.md").read_text()
    (table,) = [t for t in markdown_tables(text) if t[0] == ["metric", "native", "container"]]
    rows = {row[0]: row[1:] for row in table[2:]}
    host = next(k for k in rows if k.startswith("host memory in use at peak"))
    assert all(cell != "-" for cell in rows[host])
    cgroup = next(k for k in rows if k.startswith("cgroup memory usage at peak"))
    assert rows[cgroup][0] == "-" and rows[cgroup][1] != "-"


def test_a_censored_u_max_is_shown_as_a_bound_and_kept_out_of_the_losses(report_dir):
    summary = json.loads((report_dir / "summary.json").read_text())
    (model,) = summary["models"]
    censored = [label for label in ("native", "container") if model["u_max_censored"][label]]
    assert censored, "the committed native runs stop at the top of their range"
    assert model["comparison"]["u_max"]["evidence"] == "bound"  # 0.69 in the container is above native's >=0.30
    # the container's KV at u_max lies below every native lower bound: a loss of at least that much, no test
    assert model["comparison"]["kv_u_max_bytes"]["evidence"] == "below_bound"
    assert model["comparison"]["kv_u_max_bytes"]["welch"] is None
    text = (report_dir / "report.md").read_text()
    assert "| u_max | not compared: a lower bound" in text


def test_a_native_only_run_reports_its_own_figures(tmp_path):
    """No container run to hold it against: the report leads with the run's own KV, in a table and the CSV."""
    data = tmp_path / "results"
    for source in DATA.glob("*/native-*.json"):
        (data / source.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(source, data / source.parent.name / source.name)
    out = tmp_path / "report"
    done = kvprobe("report", str(data), "--out", str(out))
    assert "reported on one side only" in done.stdout
    text = (out / "report.md").read_text()
    first = text.split("\n\n")[1]
    assert first.startswith("**") and "native only" in first and "nothing is compared" in first
    assert "0 model(s)" not in text
    for model, runs in ((m, by_label(m)["native"]) for m in {d["model"] for d in documents()}):
        mean = statistics.mean(d["reference"]["bytes"] for d in runs) / GIB
        assert f"## {model} (native only)" in text
        assert f"KV cache at gpu_memory_utilization (GiB) | {mean:.2f}" in text
    with (out / "runs.csv").open() as f:
        assert len(list(csv.DictReader(f))) == len(list(data.glob("*/*.json")))
    assert not list(out.glob("*.png"))  # nothing to compare, no chart drawn
