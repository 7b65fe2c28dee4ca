"""Experiment files: every problem at once (file, condition, field), exit 2, nothing written; and
the schedule, interleaved. No engine runs here."""

from __future__ import annotations

import pytest
import yaml

from conftest import ROOT, kvprobe, tiny_models_file
from kvprobe.config import ConfigError
from kvprobe.experiment.plan import estimate, schedule
from kvprobe.experiment.spec import load_experiment


def write(directory, body: dict):
    path = directory / "experiment.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


@pytest.fixture
def models(tmp_path):
    return tiny_models_file(tmp_path)


def test_a_good_file_interleaves_its_conditions_repeat_by_repeat(tmp_path, models):
    path = write(
        tmp_path,
        {
            "name": "demo",
            "models": str(models),
            "baseline": "a",
            "repeats": 3,
            "searches": ["reference", "u_max"],
            "conditions": {"a": {}, "b": {"page_cache": "1g"}, "c": {"hold_memory": "512m"}},
        },
    )
    experiment = load_experiment(path)
    order = [(cell.repeat, cell.condition.name) for cell in schedule(experiment)]
    assert order == [(r, c) for r in (1, 2, 3) for c in ("a", "b", "c")]
    assert experiment.conditions[1].page_cache_bytes == 1 << 30
    assert experiment.conditions[2].hold_memory_bytes == 512 << 20
    guess = estimate(experiment, [])
    assert guess.starts == 9 * (1 + 3 + 1)
    assert all("model-size rule" in timed.source for timed in guess.per_model)


def test_every_problem_is_named_at_once_and_nothing_is_written(tmp_path, models):
    path = write(
        tmp_path,
        {
            "name": "demo",
            "models": str(models),
            "baseline": "missing",
            "explains": "also-missing",
            "repeats": 0,
            "colour": "blue",
            "conditions": {
                "ok": {},
                "bad size": {"page_cache": "lots"},
                "weights": {"weights": "real"},
                "stray": {"hold_memory": -5, "unknown": 1},
                "box": {"container": {"runtime": "lxc"}},
            },
        },
    )
    out = tmp_path / "out"
    done = kvprobe("experiment", str(path), "--out", str(out), check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    message = done.stderr
    for expected in (
        "field 'repeats'",
        "field 'colour': unknown key",
        "condition 'bad size': field 'page_cache'",
        "condition 'stray': field 'hold_memory'",
        "condition 'stray': field 'unknown': unknown key",
        "condition 'box': field 'container.runtime'",
    ):
        assert expected in message, (expected, message)
    assert str(path) in message
    assert not out.exists()


def test_references_and_weights_are_checked_after_the_fields(tmp_path, models):
    path = write(
        tmp_path,
        {
            "name": "demo",
            "models": str(models),
            "baseline": "missing",
            "explains": "also-missing",
            "conditions": {"bad/name": {}, "weights": {"weights": "real"}, "dir": {"weights_dir": "."}},
        },
    )
    with pytest.raises(ConfigError) as raised:
        load_experiment(path)
    lines = str(raised.value).splitlines()
    assert any("field 'baseline': 'missing' is not one of the conditions" in line for line in lines)
    assert any("field 'explains': 'also-missing'" in line for line in lines)
    assert any("condition 'bad/name': its name must be" in line for line in lines)
    assert any("condition 'weights': field 'weights_dir': weights: real needs" in line for line in lines)
    assert any("condition 'dir': field 'weights_dir': only with weights: real" in line for line in lines)
    assert all(str(path) in line for line in lines)


def test_a_bad_models_file_is_named_with_the_experiment(tmp_path):
    path = write(tmp_path, {"name": "x", "models": "nowhere.yaml", "baseline": "a", "conditions": {"a": {}}})
    with pytest.raises(ConfigError, match=r"experiment.yaml: field 'models': .*nowhere.yaml: file not found"):
        load_experiment(path)


def test_the_shipped_experiments_load(tmp_path):
    experiment = load_experiment(ROOT / "experiments" / "dgx-spark.yaml")
    assert {c.name for c in experiment.conditions} >= {"native", "docker"}
    assert experiment.file.baseline == "native"
