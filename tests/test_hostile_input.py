"""Hostile and careless input: every problem refused with exit 2 and a sentence, all at once, nothing
written; text from users, engines and files printed and rendered as text. No engine starts here."""

from __future__ import annotations

import errno
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from conftest import ROOT
from kvprobe.config import ConfigError, load_models
from kvprobe.output.progress import TrialProgress, print_summary
from kvprobe.report.summary import build_report
from kvprobe.report.writers import ReportOptions, render_report
from kvprobe.results.loader import ResultFileError, parse_result
from kvprobe.results.schema import TrialRecord
from kvprobe.results.store import Journal, ResultStore, write_bytes_atomic
from kvprobe.trial.executor import TrialRequest
from kvprobe.units import parse_size
from synthetic import documents, trial

TINY = ROOT / "configs" / "tiny-llama"
HEADER = "defaults:\n  load_format: dummy\nmodels:\n"


def models_file(tmp_path: Path, body: str, config: str | None = None) -> Path:
    model = tmp_path / "tiny"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(config if config is not None else (TINY / "config.json").read_text())
    path = tmp_path / "models.yaml"
    path.write_text(HEADER + body)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as refused:
        load_models(path)
    return str(refused.value).splitlines()


@pytest.mark.parametrize(
    "body,config,says",
    [
        ("  - {name: t, model: tiny, max_model_len: 256}\n", "{not json", "config.json: not valid JSON"),
        (
            "  - {name: t, model: tiny, max_model_len: true}\n",
            None,
            "field 'max_model_len': Input should be a valid integer",
        ),
        ("  - {name: t, model: tiny, max_model_len: 1e29}\n", None, "field 'max_model_len'"),
        (
            "  - {name: t, model: tiny, max_model_len: 256, utilization_range: [0.1, null]}\n",
            None,
            "expected two numbers",
        ),
        ('  - {name: "a\\tb", model: tiny, max_model_len: 256}\n', None, "no tabs or newlines"),
        (f"  - {{name: {'x' * 300}, model: tiny, max_model_len: 256}}\n", None, "at most 100"),
        (
            "  - {name: t, model: tiny, max_model_len: 256, extra_engine_args: {seed: &a [1]}, x: *a}\n",
            None,
            "aliases (*name) are not allowed",
        ),
    ],
)
def test_input_that_would_have_started_an_engine_is_refused(tmp_path, body, config, says):
    found = problems(models_file(tmp_path, body, config))
    assert any(says in line for line in found), found
    assert all(line.startswith(str(tmp_path / "models.yaml")) for line in found)


def test_the_default_load_format_needs_weight_files(tmp_path):
    path = models_file(tmp_path, "  - {name: t, model: tiny, max_model_len: 256}\n")
    path.write_text(path.read_text().replace("defaults:\n  load_format: dummy\n", "defaults: {}\n"))
    assert any("field 'load_format'" in line and "no weight files" in line for line in problems(path))


def test_every_problem_of_a_file_is_reported_at_once(tmp_path):
    body = (
        "  - {name: a, model: tiny, max_modle_len: 256}\n"  # a typo: unknown key AND the missing field
        "  - {name: b, model: nowhere, max_model_len: 256, gpu_memory_utilization: 2}\n"
    )
    found = problems(models_file(tmp_path, body))
    assert len(found) == 4, found
    assert any("model 'a': field 'max_modle_len': unknown key" in line for line in found)
    assert any("model 'a': field 'max_model_len': Field required" in line for line in found)
    assert any("model 'b': field 'model'" in line for line in found)
    assert any("model 'b': field 'gpu_memory_utilization'" in line for line in found)


def test_a_huge_models_file_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text("# " + "x" * (2 << 20))
    assert "a models file is at most" in problems(path)[0]


def test_the_cli_prints_all_problems_and_exits_2_writing_nothing(tmp_path):
    body = "  - {name: a, model: tiny, max_modle_len: 256}\n  - {name: a, model: tiny, max_model_len: 256}\n"
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "kvprobe.cli", "measure", str(models_file(tmp_path, body)), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "unknown key" in done.stderr and "Field required" in done.stderr
    assert not out.exists()


@pytest.mark.parametrize("text", ["-1g", "nan", "inf", "1e40"])
def test_a_guard_floor_that_would_switch_the_guard_off_is_refused(text):
    with pytest.raises(ValueError):
        parse_size(text)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kvprobe.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


def test_an_out_that_cannot_be_a_directory_is_bad_input(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    done = run_cli("measure", str(ROOT / "models.yaml"), "--only", "tiny-llama", "--out", str(blocker / "sub"))
    assert done.returncode == 2 and "Traceback" not in done.stderr and "cannot be used" in done.stderr


@pytest.mark.parametrize("manifest", ["{torn", '{"run_id": "../../../tmp/escape", "status": "running"}'])
def test_a_corrupt_or_escaping_run_manifest_is_bad_input(tmp_path, manifest):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".kvprobe-run-native.json").write_text(manifest)
    done = run_cli(
        "measure", str(ROOT / "models.yaml"), "--only", "tiny-llama", "--out", str(out), "--resume", "--label", "native"
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr and "remove it to start anew" in done.stderr
    assert not (tmp_path / "escape").exists()


def record(number: int) -> TrialRecord:
    return trial(number=number)


def test_a_torn_journal_line_does_not_swallow_the_next_entry(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.append("one", record(1))
    with open(path, "a") as handle:
        handle.write('{"key": "two", "trial": {"numb')  # power lost mid-line
    Journal(path).append("three", record(3))
    path.write_text(path.read_text() + '["a list, not an entry"]\n')
    reread = Journal(path)
    assert set(reread.entries) == {"one", "three"}
    assert reread.skipped == [2, 4]


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "report.md"
    target.write_text("old")
    real_fsync = __import__("os").fsync

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("os.fsync", full_disk)
    with pytest.raises(OSError):
        write_bytes_atomic(target, b"new")
    monkeypatch.setattr("os.fsync", real_fsync)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.md"]


MARKUP = ["[/x]", "[bold]", "OSError: [/dev/shm] is full", "[core.py:700]", "\x1b[31mred"]


@pytest.mark.parametrize("text", MARKUP)
def test_engine_and_user_text_is_printed_as_text(text):
    out = io.StringIO()
    progress = TrialProgress(Console(file=out, width=300, force_terminal=False))
    failed = record(2).model_copy(update={"outcome": "error", "reason": text, "passed": False})
    progress.trial_started(TrialRequest(number=2, search="u_max", engine_args={}, model=text, utilization=0.5))
    progress.trial_finished(text, failed, replayed=False)
    progress.result_written(Path(f"/out{text}/x.json"))
    doc = documents(model="m")[0].model_copy(update={"model": text, "errors": [text], "status": "failed"})
    print_summary(Console(file=out, width=300), [doc])
    printed = out.getvalue()
    assert printed.count(text.replace("\x1b", "")) >= 3 or printed.count(text) >= 3


def test_the_report_loader_names_each_unusable_file_and_skips_nothing_silently(tmp_path):
    store = ResultStore(tmp_path)
    good = documents()[0]
    store.write_result(store.result_path(good.model, good.label, good.run_id, good.repeat), good)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "truncated.json").write_text('{"schema_version": 2, "run_')
    (tmp_path / "m" / "nan.json").write_text('{"schema_version": 2, "repeat": NaN}')
    outside = tmp_path.parent / f"{tmp_path.name}-outside.json"
    outside.write_text(json.dumps(good.model_dump(mode="json")))
    (tmp_path / "m" / "link.json").symlink_to(outside)
    loaded, unusable = store.load_all()
    assert [doc for _, doc in loaded] == [good]
    assert len(unusable) == 3 and any("outside the results directory" in p for p in unusable)


# --- property-based: arbitrary text never crashes the tool, breaks a table or reaches HTML raw -------------

any_text = st.text(min_size=1, max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=any_text)
def test_any_model_name_is_refused_or_accepted_never_a_crash(tmp_path, name):
    path = models_file(tmp_path, f"  - {{name: {json.dumps(name)}, model: tiny, max_model_len: 256}}\n")
    try:
        (model,) = load_models(path)
    except ConfigError as refused:
        assert str(refused).startswith(str(path))
    else:
        assert model.name == name and name.isprintable()


@settings(max_examples=40, deadline=None)
@given(data=st.dictionaries(st.text(max_size=8), st.one_of(st.none(), st.integers(), st.text(max_size=8)), max_size=5))
def test_any_json_object_is_a_result_or_a_sentence(data):
    try:
        parse_result(data, "x.json")
    except ResultFileError as refused:
        assert str(refused).startswith("x.json: ")


@settings(max_examples=40, deadline=None)
@given(name=any_text, label=any_text)
def test_any_name_keeps_every_table_whole_and_no_raw_html(name, label):
    name, label = f"⟦{name}⟧", f"⟦{label}⟧"  # fenced, so that the raw text cannot appear by chance
    docs = documents(model="m")
    docs = [d.model_copy(update={"model": name}) for d in docs]
    docs[-1] = docs[-1].model_copy(update={"status": "failed", "errors": [label]})
    files = render_report(build_report(docs), ["markdown", "html"], ReportOptions(title=label))
    markdown = files["report.md"].decode()
    assert "\r" not in markdown and not any(not c.isprintable() for c in markdown if c not in "\n")
    tables = [block for block in markdown.split("\n\n") if block.startswith("|")]
    for table in tables:
        widths = {len(_cells(row)) for row in table.split("\n")}
        assert len(widths) == 1, table
    html = files["report.html"].decode()
    for text in (name, label):
        if "<" in text or "&" in text:
            assert text not in html  # escaped wherever it is shown


def _cells(row: str) -> list[str]:
    """GFM table cells: split on pipes not escaped with a backslash."""
    cells, current, escaped = [], "", False
    for char in row.strip().strip("|"):
        if char == "|" and not escaped:
            cells.append(current)
            current = ""
        else:
            current += char
        escaped = char == "\\" and not escaped
    return [*cells, current]


def test_a_model_wider_than_the_machines_gpus_is_refused():
    from conftest import environment
    from kvprobe.measure.session import wider_than_the_machine

    (model,) = load_models(ROOT / "models.yaml", only=["deepseek-r1-distill-qwen-7b"])
    wide = model.model_copy(update={"tensor_parallel_size": 2})
    one_gpu = environment(mem_total=64 << 30, devices=[(80 << 30, False)])
    assert wider_than_the_machine([wide], one_gpu) == [
        "model 'deepseek-r1-distill-qwen-7b': field 'tensor_parallel_size': 2 GPUs, but this machine has 1"
    ]
    assert wider_than_the_machine([model], one_gpu) == []


def test_a_model_path_a_runtime_cannot_mount_is_named(tmp_path):
    from kvprobe.measure.containers import ContainerError, mounts

    odd = tmp_path / "a:b"
    (odd / "tiny").mkdir(parents=True)
    (odd / "tiny" / "config.json").write_text((TINY / "config.json").read_text())
    (model,) = load_models(models_file(tmp_path, "  - {name: t, model: tiny, max_model_len: 256}\n"))
    model = model.model_copy(update={"model": str(odd / "tiny")})
    with pytest.raises(ContainerError, match=r"model 't': field 'model': .* contains ':'"):
        mounts([model], tmp_path / "models.yaml", tmp_path / "out", [])


def test_a_markdown_image_in_a_name_does_not_make_the_html_read_a_file(tmp_path):
    secret = tmp_path / "secret.svg"
    secret.write_text("<svg>SECRET</svg>")
    docs = [d.model_copy(update={"model": f"![x]({secret.with_suffix('.png')})"}) for d in documents()]
    files = render_report(build_report(docs), ["markdown", "html"])
    assert "SECRET" not in files["report.html"].decode()
    assert "![x](" not in files["report.md"].decode()  # the brackets are escaped: no image in Markdown either
