"""Every report writer against a golden file made from a fixed synthetic report (tests/synthetic.py).

A change in any output format shows as a diff of tests/golden/ to review. After a deliberate change:

    KVPROBE_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_report_golden.py

The HTML is rendered with stand-in SVGs (what matplotlib draws differs between its versions); the
charts are compared as their specs (what is drawn), and drawn for real in test_report.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from kvprobe.report.charts import KvCacheChart, WindowChart, alt_text, chart_specs
from kvprobe.report.csv_writer import CsvWriter
from kvprobe.report.html import HtmlWriter
from kvprobe.report.json_writer import JsonWriter
from kvprobe.report.layout import build_document
from kvprobe.report.markdown import MarkdownWriter
from kvprobe.report.summary import build_report
from synthetic import documents

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("KVPROBE_UPDATE_GOLDEN") == "1"
TITLE = 'KV cache: "native" vs <container>'
DATE = "2026-01-01"


@pytest.fixture(scope="module")
def rendered() -> dict[str, bytes]:
    summary = build_report(documents(), problems=["broken.json: not valid JSON"])
    specs = chart_specs(summary)
    images = {f"{spec.stem}.svg": f'<?xml version="1.0"?>\n<svg id="{spec.stem}"></svg>'.encode() for spec in specs}
    document = build_document(summary, TITLE, DATE, {spec.stem: alt_text(spec) for spec in specs}, [])
    files: dict[str, bytes] = {
        **MarkdownWriter(front_matter=True).render(document),
        **HtmlWriter().render(document, images),
        **CsvWriter().render(summary),
        **JsonWriter().render(summary),
    }
    specs_json = [{"kind": type(spec).__name__, **dataclasses.asdict(spec)} for spec in specs]
    files["charts.json"] = (json.dumps(specs_json, indent=1) + "\n").encode()
    return files


@pytest.mark.parametrize("name", ["index.md", "report.html", "runs.csv", "summary.json", "charts.json"])
def test_writer_output_equals_its_golden_file(rendered, name):
    golden = GOLDEN / name
    if UPDATE:
        golden.parent.mkdir(exist_ok=True)
        golden.write_bytes(rendered[name])
    assert golden.exists(), f"no golden file {golden}: run with KVPROBE_UPDATE_GOLDEN=1 once"
    assert rendered[name].decode() == golden.read_text()


def test_the_golden_report_is_what_the_numbers_say(rendered):
    """The golden files are not just stable: the synthetic numbers are in them, rounded for display only."""
    markdown = rendered["index.md"].decode()
    assert 'title: "KV cache: \\"native\\" vs <container>"' in markdown  # valid YAML, quotes kept
    native_blocks = [701, 702, 703]
    mean_native_gib = sum(native_blocks) * 4 / 1024 / 3
    assert f"| demo-model | {mean_native_gib:.2f} | {35 * 4 / 1024:.2f} |" in markdown
    summary = json.loads(rendered["summary.json"])
    assert summary["models"][0]["stats"]["native"]["kv_reference_bytes"]["mean"] == sum(native_blocks) * (4 << 20) / 3
    assert summary["unmatched"] == ["broken.json: not valid JSON"]
    html = rendered["report.html"].decode()
    assert "<title>KV cache: &quot;native&quot; vs &lt;container&gt;</title>" in html
    assert html.count("<svg") == 3 and "<?xml" not in html


def test_a_lower_bound_is_drawn_as_a_bound_in_the_chart_spec():
    """A u_max at the top of its range: its KV bar is open-ended (hatched, >=), its window has an arrow."""
    docs = documents()
    native = []
    for doc in docs[:3]:
        search = doc.searches["u_max"].model_copy(update={"censored": True, "failing": None, "converged": False})
        native.append(doc.model_copy(update={"searches": {**doc.searches, "u_max": search}}))
    specs = chart_specs(build_report(native + docs[3:]))
    (kv,) = [s for s in specs if isinstance(s, KvCacheChart)]
    at_u_max = kv.panels[1]
    assert at_u_max.bounds == {"native": (True,), "container": (False,)}
    assert kv.panels[0].bounds == {"native": (False,), "container": (False,)}  # the reference start is exact
    assert "native >=" in alt_text(kv)
    (window,) = [s for s in specs if isinstance(s, WindowChart)]
    assert [row.high_bound for row in window.rows] == [True, False]
