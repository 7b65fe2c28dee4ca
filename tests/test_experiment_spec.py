"""Experiment files: every problem at once (file, condition, field), exit 2, nothing written; and
the schedule, interleaved. No engine runs here."""

from __future__ import annotations

import pytest
import yaml

from conftest import ROOT, kvprobe, tiny_models_file
from kvprobe.config import ConfigError, load_models
from kvprobe.errors import InputError
from kvprobe.experiment import preflight
from kvprobe.experiment.plan import RULE_FIXED_S, RULE_S_PER_GIB, estimate, schedule, start_time
from kvprobe.experiment.spec import load_experiment
from kvprobe.measure.containers import build_command
from kvprobe.predict import predict
from kvprobe.units import GIB


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


def test_the_shipped_experiments_load_and_their_private_ipc_is_private():
    spark = load_experiment(ROOT / "experiments" / "dgx-spark.yaml")
    by_name = {c.name: c for c in spark.conditions}
    assert spark.file.baseline == "native" and by_name["native"].native_from_image is not None
    private = by_name["docker-private-shm"].container
    assert private is not None and not private.ipc_host and private.shm_size == "60g"
    command = build_command(private, ["kvprobe"], [])
    assert "--ipc" not in command and command[command.index("--shm-size") + 1] == "60g"
    assert "qwen2.5-72b-instruct" not in [m.name for m in spark.models]  # bf16: 135.4 GiB of weights
    for name in ("ladder-spark", "ladder-cpu"):
        ladder = load_experiment(ROOT / "experiments" / f"{name}.yaml")
        assert ladder.reference.ladder and ladder.reference.order == "interleaved"
        assert ladder.reference.conditions[-1] == ladder.file.explains == "study-flags"
        assert ladder.conditions[0].container is None and ladder.conditions[-1].container is not None


def _rungs(container: dict) -> dict:
    return {"native": {}, "box": {"container": {"runtime": "podman", "rootfs": "/:O", **container}}}


@pytest.mark.parametrize(
    ("container", "field", "words"),
    [
        ({"ipc": "private", "ipc_host": True}, "container.ipc", "ipc: private contradicts ipc_host: true"),
        ({"cgroup": "disabled", "memory": "4g"}, "container.memory", "a memory limit needs a cgroup of its own"),
        ({"cgroup": "disabled", "pid": "host"}, "container.pid", "PID namespace of its own"),
        ({"cgroup": "disabled", "oci_runtime": "runc"}, "container.cgroup", "only with crun, not runc"),
        ({"cgroup": "disabled", "cgroup_parent": "x"}, "container.cgroup_parent", "no cgroup of its own"),
        ({"shm_size": "60g"}, "container.shm_size", "has no effect with the host's IPC"),
        ({"seccomp": "off"}, "container.seccomp", "'default' or 'unconfined'"),
        ({"netns": "host"}, "container.netns", "unknown key"),
    ],
)
def test_a_ladder_contradiction_is_refused_naming_file_condition_and_field(tmp_path, models, container, field, words):
    path = write(tmp_path, {"name": "l", "models": str(models), "baseline": "native", "conditions": _rungs(container)})
    done = kvprobe("experiment", str(path), "--out", str(tmp_path / "out"), "--dry-run", check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    line = next(line for line in done.stderr.splitlines() if f"field '{field}'" in line)
    assert f"{path}: condition 'box': field '{field}'" in line and words in done.stderr


def test_every_contradiction_at_once_and_docker_cannot_go_without_a_cgroup(tmp_path, models):
    conditions = {
        "native": {},
        "a": {"container": {"runtime": "docker", "image": "x", "cgroup": "disabled", "memory": "1g"}},
        "b": {"container": {"runtime": "podman", "image": "x"}, "native_from_image": {"image": "x"}},
        "c": {"native_from_image": {"image": "x", "rootfs": "/"}},
    }
    path = write(tmp_path, {"name": "l", "models": str(models), "baseline": "native", "conditions": conditions})
    with pytest.raises(ConfigError) as raised:
        load_experiment(path)
    lines = str(raised.value).splitlines()
    assert "condition 'a': field 'container.cgroup': docker always makes a cgroup" in raised.value.args[0]
    assert any("condition 'a': field 'container.memory'" in line for line in lines)
    assert any(
        "condition 'b': field 'native_from_image': a condition runs in a container or natively" in line
        for line in lines
    )
    assert any(
        "condition 'c': field 'native_from_image': give exactly one of image and rootfs" in line for line in lines
    )


def test_blocked_runs_every_repeat_of_a_condition_before_the_next_and_says_so(tmp_path, models):
    body = {"name": "b", "models": str(models), "baseline": "a", "repeats": 2, "order": "blocked"}
    experiment = load_experiment(write(tmp_path, {**body, "conditions": {"a": {}, "b": {}}}))
    assert [cell.key for cell in schedule(experiment)] == ["a/r1", "a/r2", "b/r1", "b/r2"]
    assert experiment.reference.order == "blocked" and not experiment.reference.ladder


def test_a_model_that_cannot_fit_is_refused_before_any_cell_with_predicts_reason(tmp_path):
    path = write(
        tmp_path,
        {
            "name": "big",
            "models": str(ROOT / "models.yaml"),
            "only": ["tiny-llama", "qwen2.5-72b-instruct"],
            "baseline": "a",
            "conditions": {"a": {}},
        },
    )
    (line,) = preflight.fit_problems(load_experiment(path), "119.6g")
    assert line.startswith(f"{path}: model 'qwen2.5-72b-instruct' cannot fit this pool (119.6 GiB, --memory 119.6g)")
    assert "weights alone (135.4 GiB) exceed the pool" in line and "remove it from `only`" in line
    with pytest.raises(InputError, match=r"qwen2\.5-72b-instruct"):
        preflight.check(
            load_experiment(write(tmp_path, {**yaml.safe_load(path.read_text()), "only": ["qwen2.5-72b-instruct"]}))
        )


def test_the_start_time_rule_weighs_a_quantized_model_as_predict_does():
    """The fp8 72B was timed as 135.4 GiB of bf16 weights by --dry-run, against predict's 70.0 GiB."""
    (fp8,) = [m for m in load_models(ROOT / "models.yaml") if m.extra_engine_args.get("quantization") == "fp8"]
    timed = start_time(fp8, [])
    predicted = predict(fp8.name, fp8.hf_config(), dtype=fp8.dtype, quantization="fp8").weight_bytes
    assert f"({predicted / GIB:.1f} GiB predicted from config.json)" in timed.source
    assert timed.seconds == pytest.approx(RULE_FIXED_S + RULE_S_PER_GIB * predicted / GIB)
