"""Hostile input through the real command line (click's CliRunner, no engine): every problem exits 2
with a sentence, Ctrl-C in `report` exits 130, the report counts each result once and skips
kvprobe's own manifests, config.json is not trusted, look-alike model names are refused, and the
Hugo front matter and shortcodes cannot be injected."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import unicodedata
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import ROOT
from kvprobe.cli import main
from kvprobe.config import ConfigError, load_models
from kvprobe.report.summary import build_report
from kvprobe.report.writers import ReportOptions, render_report
from kvprobe.results.store import ResultStore
from synthetic import documents

TINY = ROOT / "configs" / "tiny-llama"
HEADER = "defaults:\n  load_format: dummy\nmodels:\n"


@contextlib.contextmanager
def within(seconds: int):
    """Fail instead of hanging: a read of a FIFO blocks until a writer comes, which none does."""

    def expired(signum, frame):
        raise AssertionError(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def refused(result, says: str) -> None:
    """Exit 2, the sentence, no traceback."""
    assert result.exit_code == 2, result.output
    assert says in result.output and "Traceback" not in result.output


def results_dir(tmp_path: Path, name: str = "out") -> Path:
    out = tmp_path / name
    store = ResultStore(out)
    for document in documents():
        store.write_result(
            store.result_path(document.model, document.condition, document.run_id, document.repeat), document
        )
    return out


def models_file(tmp_path: Path, names: list[str], config: dict | None = None) -> Path:
    model = tmp_path / "tiny"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(json.dumps(config) if config is not None else (TINY / "config.json").read_text())
    path = tmp_path / "models.yaml"
    body = "".join(f"  - {{name: {json.dumps(name)}, model: tiny, max_model_len: 256}}\n" for name in names)
    path.write_text(HEADER + body)
    return path


# --- option values -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
@pytest.mark.parametrize("option", ["--trial-timeout", "--cooldown", "--tolerance", "--fill-target"])
def test_non_finite_numbers_are_refused_for_every_float_option(tmp_path, option, value):
    # a models file that does not exist: were the option accepted, the command would still stop there
    result = invoke("measure", str(tmp_path / "absent.yaml"), option, value, "--out", str(tmp_path / "out"))
    refused(result, "is not a finite number")
    assert not (tmp_path / "out").exists()


def test_predict_refuses_a_nan_utilization(tmp_path):
    refused(invoke("predict", str(models_file(tmp_path, ["t"])), "--memory", "8g", "--utilization", "nan"), "finite")


def test_searches_of_only_commas_are_refused(tmp_path):
    # --guard-floor is checked after --searches: were ',' accepted, the command would stop there, not start an engine
    out = str(tmp_path / "out")
    result = invoke("measure", str(models_file(tmp_path, ["t"])), "--searches", ",", "--guard-floor", "x", "--out", out)
    refused(result, "--searches: give one or more of")


def test_report_formats_of_only_commas_are_refused(tmp_path):
    refused(invoke("report", str(results_dir(tmp_path)), "--format", " , "), "--format: give one or more of")


# --- report: exit codes, manifests, duplicates ---------------------------------------------------


def test_ctrl_c_in_report_exits_130(tmp_path, monkeypatch):
    """Ctrl-C simulated: the report's builder is patched to raise KeyboardInterrupt, as a Ctrl-C there would."""

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("kvprobe.report.run.build_report", interrupted)
    result = CliRunner().invoke(main, ["report", str(results_dir(tmp_path)), "--format", "json"])
    assert result.exit_code == 130 and "interrupted" in result.output


def test_the_report_skips_kvprobes_own_manifests_and_its_own_summary(tmp_path):
    out = results_dir(tmp_path)
    first = invoke("report", str(out), "--format", "json")
    assert first.exit_code == 0 and (out / "report" / "summary.json").is_file()
    inner = out / "experiment-copy"  # an experiment's directory kept inside this one
    inner.mkdir()
    (inner / "experiment.json").write_text('{"experiment": "x"}')
    (inner / ".kvprobe-run-native.json").write_text('{"run_id": "20261125T120024-252c"}')
    second = invoke("report", str(out), "--format", "json")
    assert second.exit_code == 0, second.output
    assert "unreadable" not in second.output


def test_a_directory_named_twice_counts_each_result_once(tmp_path):
    out = results_dir(tmp_path)
    once = json.loads(render_report(build_report(documents()), ["json"])["summary.json"])
    result = invoke("report", str(out), str(out), "--format", "json", "--out", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output
    assert "counted once" in result.output
    assert json.loads((tmp_path / "r" / "summary.json").read_text()) == once


def test_a_copy_of_a_results_directory_counts_each_result_once(tmp_path):
    out = results_dir(tmp_path)
    shutil.copytree(out, tmp_path / "copy")
    result = invoke("report", str(out), str(tmp_path / "copy"), "--format", "json", "--out", str(tmp_path / "r"))
    assert result.exit_code == 0 and result.output.count("counted once") == len(documents())


def test_a_deeply_nested_result_is_skipped_with_a_sentence_and_the_rest_reported(tmp_path):
    out = results_dir(tmp_path)
    (out / "demo-model" / "native-deep-r1.json").write_text("[" * 100_000 + "]" * 100_000)
    result = invoke("report", str(out), "--format", "json", "--out", str(tmp_path / "r"))
    assert result.exit_code == 0 and "skipped 1 unreadable result file" in result.output


# --- Hugo front matter and shortcodes ------------------------------------------------------------


@pytest.mark.parametrize("date", ["2026-11-30\ndraft: false\n---\n<script>x</script>", "tomorrow", "2026-13-01", ""])
def test_a_front_matter_date_that_is_not_an_iso_date_is_refused(tmp_path, date):
    out = results_dir(tmp_path)
    result = invoke("report", str(out), "--format", "markdown", "--front-matter", "--date", date)
    refused(result, "--date: ")
    assert not (out / "report").exists()


@pytest.mark.parametrize("date", ["2026-11-30", "2026-11-30T08:15:00Z", "2026-11-30T08:15:00+01:00"])
def test_an_iso_date_or_datetime_is_written_as_given(tmp_path, date):
    out = results_dir(tmp_path)
    assert invoke("report", str(out), "--format", "markdown", "--front-matter", "--date", date).exit_code == 0
    assert f"\ndate: {date}\n" in (out / "report" / "index.md").read_text()


def test_a_title_cannot_add_front_matter_keys():
    title = 'x"\ndraft: true\n---\n{{< shortcode >}}'
    markdown = render_report(
        build_report(documents()), ["markdown"], ReportOptions(title=title, front_matter=True, date="2026-11-30")
    )["index.md"].decode()
    matter = markdown.split("\n---\n")[0].removeprefix("---\n").splitlines()
    assert [line.split(":")[0] for line in matter] == ["title", "date", "draft", "tags"]
    assert matter[0] == f"title: {json.dumps(title)}"


@pytest.mark.parametrize("text", ["{{< param secret >}}", "{{% include x %}}", "{{<figure src=/etc/passwd>}}"])
def test_hugo_shortcodes_in_titles_and_model_names_are_escaped(text):
    docs = [d.model_copy(update={"model": f"m {text}"}) for d in documents()]
    markdown = render_report(build_report(docs), ["markdown"], ReportOptions(title=text))["report.md"].decode()
    assert "{{<" not in markdown and "{{%" not in markdown
    assert "{\\{" in markdown  # still shown: a backslash renders as the brace itself


# --- predict trusts no config.json ---------------------------------------------------------------


def tiny_config(**changes) -> dict:
    config = json.loads((TINY / "config.json").read_text())
    config.update(changes)
    return {k: v for k, v in config.items() if v is not None}


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"num_hidden_layers": 0}, "field 'num_hidden_layers': must be a whole number from 1"),
        ({"num_attention_heads": 0, "head_dim": None}, "field 'num_attention_heads': must be a whole number from 1"),
        ({"num_key_value_heads": -4}, "field 'num_key_value_heads': must be a whole number from 1"),
        ({"hidden_size": 10**400}, "field 'hidden_size': must be a whole number"),
        ({"hidden_size": 1.5}, "field 'hidden_size': must be a whole number"),
        ({"vocab_size": None}, "field 'vocab_size': missing"),
        ({"torch_dtype": "float8_weird"}, "dtype 'float8_weird': unknown"),
        (
            {"hidden_size": 2, "num_attention_heads": 4, "head_dim": None},
            "field 'hidden_size': 2 is smaller than num_attention_heads 4",
        ),
    ],
)
def test_predict_names_each_unusable_config_field_and_exits_2(tmp_path, changes, says):
    path = models_file(tmp_path, ["t"], tiny_config(**changes))
    result = invoke("predict", str(path), "--memory", "8g")
    refused(result, f"{path}: model 't': config.json {says}")


def test_predict_refuses_nan_in_config_json(tmp_path):
    path = models_file(tmp_path, ["t"])
    (tmp_path / "tiny" / "config.json").write_text(
        (TINY / "config.json").read_text().replace('"vocab_size": 2048', '"vocab_size": NaN')
    )
    refused(invoke("predict", str(path), "--memory", "8g"), "NaN is not a number a config can hold")


def test_predict_refuses_a_deeply_nested_config_json(tmp_path):
    path = models_file(tmp_path, ["t"])
    (tmp_path / "tiny" / "config.json").write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    refused(invoke("predict", str(path), "--memory", "8g"), "nested too deeply")


@pytest.mark.parametrize("command", ["predict", "measure", "experiment"])
def test_a_deeply_nested_models_or_experiment_file_is_bad_input(tmp_path, command):
    """measure and predict exited 1 with a RecursionError; an experiment file is read the same way."""
    path = tmp_path / "input.yaml"
    path.write_text("models: " + "[" * 50_000 + "]" * 50_000 + "\n")
    extra = {"predict": ["--memory", "8g"], "measure": ["--out", str(tmp_path / "out")]}.get(command, [])
    if command == "experiment":
        extra = ["--out", str(tmp_path / "out"), "--dry-run"]
    refused(invoke(command, str(path), *extra), "nested too deeply to read")
    assert not (tmp_path / "out").exists()


def test_a_fifo_in_a_recorded_machine_is_refused_without_hanging(tmp_path):
    (tmp_path / "proc").mkdir()
    os.mkfifo(tmp_path / "proc" / "meminfo")
    with within(10):
        refused(invoke("env", "--recorded", str(tmp_path)), "not a regular file")


def test_a_fifo_config_json_is_refused_without_hanging(tmp_path):
    path = models_file(tmp_path, ["t"])
    (tmp_path / "tiny" / "config.json").unlink()
    os.mkfifo(tmp_path / "tiny" / "config.json")
    with within(20):
        refused(invoke("predict", str(path), "--memory", "8g"), "not a regular file")


# --- env --recorded ------------------------------------------------------------------------------


def test_env_recorded_on_an_empty_directory_is_bad_input(tmp_path):
    refused(invoke("env", "--recorded", str(tmp_path)), f"{tmp_path}: no proc/meminfo; not a recorded machine")


def test_env_recorded_on_garbage_names_each_problem(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "meminfo").write_text("nothing here\n")
    (tmp_path / "nvml.json").write_text('{"devices": [{"memory": 3}]}')
    result = invoke("env", "--recorded", str(tmp_path))
    refused(result, "no 'MemTotal: N kB' line")
    assert "field 'driver_version': expected text" in result.output and "devices.0" in result.output


def test_env_recorded_still_reads_the_recorded_machines():
    for machine in sorted((ROOT / "tests" / "data" / "machines").iterdir()):
        if machine.is_dir():
            assert invoke("env", "--json", "--recorded", str(machine)).exit_code == 0, machine


# --- look-alike model names ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "says"),
    [
        (["llama", "LLAMA"], "model 'LLAMA': field 'name': looks like model 'llama'"),
        (["llama", "ll\u0430ma"], "model 'll\\u0430ma': field 'name': looks like model 'llama'"),
        (["caf\u00e9", unicodedata.normalize("NFD", "caf\u00e9")], "looks like model 'caf\\xe9'"),
        (["\uff4c\uff4c\uff41\uff4d\uff41", "llama"], "looks like model"),  # full-width letters (NFKC)
    ],
)
def test_look_alike_model_names_are_refused(tmp_path, names, says):
    with pytest.raises(ConfigError, match="differs only in Unicode form, case or look-alike letters") as caught:
        load_models(models_file(tmp_path, names))
    assert says in str(caught.value)


def test_a_name_mixing_latin_and_cyrillic_is_refused_through_the_cli(tmp_path):
    path = models_file(tmp_path, ["ll\u0430ma-3b", "qwen"])
    refused(invoke("predict", str(path), "--memory", "8g"), "mixes cyrillic and latin letters")


def test_distinct_names_still_load(tmp_path):
    assert [m.name for m in load_models(models_file(tmp_path, ["llama-3b", "llama-8b", "qwen"]))] == [
        "llama-3b",
        "llama-8b",
        "qwen",
    ]


def test_an_option_error_and_a_models_file_error_are_reported_together(tmp_path):
    """They were reported one at a time: fix one, run again, meet the next."""
    models = tmp_path / "models.yaml"
    models.write_text("models:\n  - {name: t, model: nowhere, max_model_len: many}\n")
    result = invoke("measure", str(models), "--range", "0.9:0.1", "--out", str(tmp_path / "out"))
    refused(result, "--range")
    assert "field 'max_model_len'" in result.output
