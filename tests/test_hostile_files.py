"""A results directory is untrusted data: links planted in it are never written through, special
files (FIFOs, /dev/zero) and deep JSON are refused with a sentence, stale markers signal only the
very process kvprobe started, and kvprobe's children never import from the working directory.
No engine starts here; the processes signalled are sleepers started by the tests."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import MODELS, kvprobe
from kvprobe.engines.trtllm import TrtllmEngine
from kvprobe.engines.vllm import VllmEngine
from kvprobe.measure.perturb import MemoryHolder, PageCacheFile
from kvprobe.measure.request import kvprobe_command
from kvprobe.results.loader import ResultFileError, load_result
from kvprobe.results.store import (
    BadManifest,
    Journal,
    LinkedDirectory,
    ResultStore,
    RunLock,
    planted_links,
    trial_log,
    write_bytes_atomic,
)
from kvprobe.safe_io import UnsafeFile, read_json, write_new
from kvprobe.trial.process_group import process_identity
from kvprobe.trial.runner import end_stale_groups, write_marker
from synthetic import trial
from test_hostile_cli import within

IDENTITY = {"condition": "native", "models": ["m"]}
VICTIM_TEXT = "a file outside the results directory\n"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file outside the results directory that a planted link points at: it must never change."""
    path = tmp_path / "victim.txt"
    path.write_text(VICTIM_TEXT)
    return path


# --- links inside --out ------------------------------------------------------------------------


def test_a_linked_lock_file_is_refused_and_its_target_untouched(tmp_path, victim):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".kvprobe.lock").symlink_to(victim)
    with pytest.raises(LinkedDirectory, match=r"holds symbolic links where kvprobe writes \(\.kvprobe\.lock\)"):
        RunLock(out).acquire()
    assert victim.read_text() == VICTIM_TEXT


def test_links_in_the_journal_trials_and_model_folders_are_all_named(tmp_path, victim):
    out = tmp_path / "out"
    for folder in (".journal", ".trials/20261125T120024-252c"):
        (out / folder).mkdir(parents=True)
    (out / ".journal" / "20261125T120024-252c.jsonl").symlink_to(victim)
    (out / ".trials" / "20261125T120024-252c" / "trial-001-reference.spec.json").symlink_to(victim)
    (out / "model").symlink_to(tmp_path)
    (out / ".kvprobe-run-native.json").symlink_to(victim)
    found = [str(p.relative_to(out)) for p in planted_links(out)]
    assert found == [
        ".journal/20261125T120024-252c.jsonl",
        ".kvprobe-run-native.json",
        ".trials/20261125T120024-252c/trial-001-reference.spec.json",
        "model",
    ]
    with pytest.raises(LinkedDirectory):
        RunLock(out).acquire()
    assert victim.read_text() == VICTIM_TEXT


def test_a_journal_that_is_a_link_is_neither_read_nor_appended_to(tmp_path, victim):
    link = tmp_path / "run.jsonl"
    link.symlink_to(victim)
    with pytest.raises(UnsafeFile, match="a symbolic link"):
        Journal(link)
    journal = Journal(tmp_path / "fresh.jsonl")
    journal.path = link  # a link put in place after the journal was read
    with pytest.raises(UnsafeFile, match="a symbolic link"):
        journal.append("key", trial())
    assert victim.read_text() == VICTIM_TEXT


def test_trial_files_replace_a_planted_link_instead_of_writing_through_it(tmp_path, victim):
    """Spec, marker and ready-gate files are created anew (O_EXCL, O_NOFOLLOW)."""
    spec = tmp_path / "trial-001-reference.spec.json"
    marker = tmp_path / "running-trial.json"
    for path in (spec, marker):
        path.symlink_to(victim)
    write_new(spec, "{}")
    write_marker(marker, os.getpid())
    assert victim.read_text() == VICTIM_TEXT
    assert not spec.is_symlink() and spec.read_text() == "{}"
    assert not marker.is_symlink() and json.loads(marker.read_text())["pid"] == os.getpid()


def test_an_atomic_write_never_follows_a_planted_temporary_link(tmp_path, victim):
    target = tmp_path / "model" / "native-x-r1.json"
    target.parent.mkdir()
    (target.parent / f".{target.name}.{os.getpid()}.tmp").symlink_to(victim)
    write_bytes_atomic(target, b"{}\n")
    assert victim.read_text() == VICTIM_TEXT and target.read_text() == "{}\n"


def test_the_page_cache_file_is_not_read_or_evicted_through_a_link(tmp_path, victim):
    page_cache = PageCacheFile(tmp_path, 4096)
    page_cache.path.symlink_to(victim)
    with pytest.raises(OSError):
        page_cache.evict()
    page_cache.path.unlink()
    (tmp_path / f"page-cache-{4096}.tmp").symlink_to(victim)
    page_cache.ensure()
    assert victim.read_text() == VICTIM_TEXT and page_cache.path.stat().st_size == 4096


def test_the_report_skips_a_result_that_is_a_link_even_within_the_directory(tmp_path):
    out = tmp_path / "out"
    (out / "model").mkdir(parents=True)
    (out / "model" / "native-x-r1.json").symlink_to(out / "model" / "elsewhere.txt")
    (out / "model" / "elsewhere.txt").write_text("{}")
    documents, problems = ResultStore(out).load_all()
    assert documents == [] and problems == [f"{out / 'model' / 'native-x-r1.json'}: a symbolic link; not read"]


# --- special files and deep JSON -----------------------------------------------------------------


def test_a_fifo_journal_manifest_or_result_is_refused_without_hanging(tmp_path):
    out = tmp_path / "out"
    (out / ".journal").mkdir(parents=True)
    (out / "model").mkdir()
    fifos = [out / ".journal" / "x.jsonl", out / ".kvprobe-run-native.json", out / "model" / "native-x-r1.json"]
    for fifo in fifos:
        os.mkfifo(fifo)
    with within(10):
        with pytest.raises(UnsafeFile, match="not a regular file"):
            Journal(fifos[0])
        with pytest.raises(BadManifest, match="not a regular file"):
            ResultStore(out).open_run("native", True, IDENTITY)
        with pytest.raises(ResultFileError, match="not a regular file"):
            load_result(fifos[2])


@pytest.mark.skipif(os.geteuid() != 0, reason="making a character device needs root")
def test_a_character_device_like_dev_zero_is_not_read(tmp_path):
    zero = tmp_path / "zero.json"
    os.mknod(zero, 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero's numbers
    with within(10), pytest.raises(UnsafeFile, match="not a regular file"):
        read_json(zero)


def test_an_oversized_file_is_refused_before_it_is_read(tmp_path):
    big = tmp_path / "big.json"
    with open(big, "wb") as handle:
        handle.truncate(2 << 20)
    with pytest.raises(UnsafeFile, match=r"2097152 bytes, more than the 1048576"):
        read_json(big, 1 << 20)


def test_deeply_nested_json_is_a_sentence_not_a_recursion_error(tmp_path):
    path = tmp_path / "model" / "native-x-r1.json"
    path.parent.mkdir()
    path.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(ResultFileError, match="nested too deeply"):
        load_result(path)


# --- stale markers -------------------------------------------------------------------------------


def engine_like_sleeper() -> subprocess.Popen:
    """A stand-in for a left-behind trial worker: its own session, 'kvprobe' on its command line."""
    command = [sys.executable, "-c", "import time; time.sleep(120)", "-m", "kvprobe.engines.vllm_worker"]
    return subprocess.Popen(command, start_new_session=True)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"start_time": -1}, "is now another process (its start time differs)"),
        ({"boot_id": "another-boot"}, "the marker was written before the last reboot"),
        ({"start_time": None, "boot_id": None}, "the marker predates start times and boot ids"),
    ],
)
def test_a_marker_whose_process_is_not_the_one_started_is_not_signalled(tmp_path, change, says):
    sleeper = engine_like_sleeper()
    try:
        marker = tmp_path / "run-1" / "running-trial.json"
        marker.parent.mkdir()
        named = {**process_identity(sleeper.pid), **change}
        marker.write_text(json.dumps({k: v for k, v in named.items() if v is not None}))
        ended, spared = end_stale_groups(tmp_path)
        assert ended == [] and len(spared) == 1 and says in spared[0] and spared[0].endswith("; not signalled")
        assert sleeper.poll() is None
        assert not marker.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_marker_that_names_the_started_process_ends_it(tmp_path):
    sleeper = engine_like_sleeper()
    try:
        (tmp_path / "run-1").mkdir()
        write_marker(tmp_path / "run-1" / "running-trial.json", sleeper.pid)
        ended, spared = end_stale_groups(tmp_path)
        assert ended == [sleeper.pid] and spared == []
        sleeper.wait(timeout=10)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_marker_naming_kvprobes_own_session_does_not_end_kvprobe(tmp_path):
    """Run in a child of its own session (so a failure ends that child, not pytest)."""
    script = textwrap.dedent(
        f"""
        import json, os, pathlib, sys
        from kvprobe.trial.process_group import process_identity
        from kvprobe.trial.runner import end_stale_groups
        run = pathlib.Path({str(tmp_path)!r}) / "run-1"
        run.mkdir()
        (run / "running-trial.json").write_text(json.dumps(process_identity(os.getsid(0))))
        ended, spared = end_stale_groups(run.parent)
        print(json.dumps([ended, spared]))
        """
    )
    command = [sys.executable, "-c", script, "kvprobe"]  # 'kvprobe' on its command line, as the CLI has
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, start_new_session=True)
    assert done.returncode == 0, done.stderr
    ended, spared = json.loads(done.stdout)
    assert ended == [] and spared == [
        f"{tmp_path / 'run-1' / 'running-trial.json'}: pid {spared[0].split('pid ')[1].split()[0]} "
        "is kvprobe's own process, group or session; not signalled"
    ]


# --- children do not import from the working directory -------------------------------------------


def test_child_commands_do_not_put_the_working_directory_on_the_import_path():
    """Trial workers of both engines, and every kvprobe child (an experiment's cells, a container's
    or chroot's inner run): `python -P`, or `-I` for an interpreter a container names."""
    assert VllmEngine().worker_command("spec.json")[:2] == [sys.executable, "-P"]
    assert TrtllmEngine().worker_command("spec.json")[:2] == [sys.executable, "-P"]
    assert kvprobe_command() == [sys.executable, "-P", "-m", "kvprobe.cli"]
    assert kvprobe_command("/usr/bin/python3")[:2] == ["/usr/bin/python3", "-I"]


def test_a_planted_module_in_the_working_directory_does_not_run_in_a_helper(tmp_path, monkeypatch):
    ran = tmp_path / "planted-module-ran"
    (tmp_path / "mmap.py").write_text(f"open({str(ran)!r}, 'w').close()\n")
    monkeypatch.chdir(tmp_path)
    holder = MemoryHolder(1 << 20)
    try:
        holder.start()
    finally:
        holder.end()
    assert not ran.exists()


def test_json_nested_deeper_than_any_kvprobe_file_is_refused_though_python_could_decode_it(tmp_path):
    """950 levels decode, but pydantic cannot serialise them again: the report would crash later."""
    path = tmp_path / "model" / "native-x-r1.json"
    path.parent.mkdir()
    path.write_text('{"schema_version": 4, "settings": ' + "[" * 950 + "]" * 950 + "}")
    with pytest.raises(ResultFileError, match=r"nested too deeply to read \(more than 64 levels\)"):
        load_result(path)


@pytest.mark.parametrize(
    "planted",
    [".kvprobe.lock", ".journal/20261125T120024-252c.jsonl", ".trials/20261125T120024-252c/trial-001-reference.log"],
)
def test_measure_resume_on_a_directory_with_a_planted_link_exits_2_naming_it(tmp_path, victim, planted):
    """At the real CLI: refused before anything is started or written, the link named, its target unchanged."""
    out = tmp_path / "out"
    (out / planted).parent.mkdir(parents=True, exist_ok=True)
    (out / planted).symlink_to(victim)
    done = kvprobe("measure", str(MODELS), "--only", "tiny-llama", "--out", str(out), "--resume", check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert planted in done.stdout + done.stderr and "symbolic link" in done.stdout + done.stderr
    assert victim.read_text() == VICTIM_TEXT
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() or p.is_symlink()) == [planted]


@pytest.mark.parametrize("folder", [".journal", ".trials", ".trials/20261125T120024-252c"])
def test_a_file_where_kvprobe_keeps_a_folder_is_refused_with_a_sentence(tmp_path, folder):
    """Found by the property test: a file named .journal ended measure --resume in a FileExistsError."""
    out = tmp_path / "out"
    (out / folder).parent.mkdir(parents=True, exist_ok=True)
    (out / folder).write_text("not a folder\n")
    with pytest.raises(LinkedDirectory, match=rf"{folder}: a file where kvprobe keeps a folder"):
        RunLock(out).acquire()
    done = kvprobe("measure", str(MODELS), "--only", "tiny-llama", "--out", str(out), "--resume", check=False)
    assert done.returncode == 2 and "a file where kvprobe keeps a folder" in done.stderr, done.stderr


def test_a_trial_log_is_read_only_from_under_its_moved_results_directory(tmp_path):
    """The log path comes from a result file: a moved run's log is found under the new directory, and
    a path that climbs out or passes a link reads nothing."""
    results = tmp_path / "moved"
    run = results / ".trials" / "run-1"
    run.mkdir(parents=True)
    (run / "trial-001.log").write_text("KV cache size: 1,024 tokens\n")
    assert trial_log(results, "/elsewhere/out/.trials/run-1/trial-001.log") == "KV cache size: 1,024 tokens\n"
    secret = tmp_path / "secret.txt"
    secret.write_text("not a log")
    assert trial_log(results, "/out/.trials/../../secret.txt") is None
    (run / "linked.log").symlink_to(secret)
    assert trial_log(results, "/out/.trials/run-1/linked.log") is None
    (results / ".trials" / "run-2").symlink_to(tmp_path)
    assert trial_log(results, "/out/.trials/run-2/secret.txt") is None
    assert trial_log(results, "/out/trial-001.log") is None and trial_log(results, None) is None
    assert trial_log(results, "/out/.trials/run-1/missing.log") is None
    linked_trials = tmp_path / "linked-trials"  # a results directory whose .trials is a link to the real one
    linked_trials.mkdir()
    (linked_trials / ".trials").symlink_to(results / ".trials")
    assert trial_log(linked_trials, "/out/.trials/run-1/trial-001.log") is None
