"""`kvprobe bundle`: one archive a maintainer rebuilds every figure from, with no host name or home
path left in any file; `kvprobe report` on the unpacked archive writes the same summary."""

from __future__ import annotations

import json
import shutil
import tarfile

from conftest import ROOT, kvprobe
from kvprobe.results.bundle import Identity, write_bundle

HOST, HOME = "spark-owner-7f3a", "/home/alice"
IDENTITY = Identity(HOST, HOME)


def results_with_identity(tmp_path):
    """The committed sample results, their environment blocks naming HOST and HOME, and an engine log."""
    results = tmp_path / "results"
    shutil.copytree(ROOT / "tests/data/results", results)
    for path in results.glob("*/*.json"):
        document = json.loads(path.read_text())
        document["model_path"] = f"{HOME}/kvprobe/configs/tiny-llama"
        for trial in document["trials"]:
            trial["log_path"] = f"{HOME}/kvprobe/results/.trials/run/{trial['number']}.log"
        path.write_text(json.dumps(document, indent=1).replace('"hostname": "vm"', f'"hostname": "{HOST}"'))
    (results / ".trials" / "run").mkdir(parents=True)
    (results / ".trials/run/1.log").write_text(f"INFO loading {HOME}/models/qwen on host {HOST}\n/proc/sys/vm ok\n")
    (results / ".kvprobe.lock").write_text("")
    return results


def test_no_host_name_or_home_path_is_left_and_the_report_is_the_same(tmp_path):
    results = results_with_identity(tmp_path)
    done = write_bundle(results, tmp_path / "sent.tar.gz", identity=IDENTITY)
    assert done.replaced >= 6 * 3
    unpacked = tmp_path / "unpacked"
    with tarfile.open(done.archive) as tar:
        names = tar.getnames()
        tar.extractall(unpacked, filter="data")
    assert "results/.kvprobe.lock" not in names and "results/.trials/run/1.log" in names
    for path in unpacked.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert HOST not in text and HOME not in text, path
    log = (unpacked / "results/.trials/run/1.log").read_text()
    assert "~/models/qwen on host HOST" in log and "/proc/sys/vm" in log
    kvprobe("report", str(results), "--out", str(tmp_path / "before"), "--format", "json")
    kvprobe("report", str(unpacked / "results"), "--out", str(tmp_path / "after"), "--format", "json")
    before, after = ((tmp_path / side / "summary.json").read_text() for side in ("before", "after"))
    assert json.loads(before) == json.loads(after)


def test_keep_identity_keeps_them(tmp_path):
    results = results_with_identity(tmp_path)
    done = write_bundle(results, tmp_path / "kept.tar.gz", keep_identity=True, identity=IDENTITY)
    assert done.replaced == 0
    with tarfile.open(done.archive) as tar:
        log = tar.extractfile("results/.trials/run/1.log").read().decode()  # type: ignore[union-attr]
    assert HOST in log and HOME in log


def test_the_command_names_where_to_send_it(tmp_path):
    results = results_with_identity(tmp_path)
    shown = kvprobe("bundle", str(results), "--out", str(tmp_path / "x.tar.gz")).stdout
    assert "wrote" in shown and "docs/field/send-results.md" in shown
    refused = kvprobe("bundle", str(tmp_path / "empty-missing"), check=False)
    assert refused.returncode == 2
