"""Every figure in docs/ is what its committed raw data gives: scripts/make_docs.py --check
regenerates the reports, the GPU pages and docs/benchmarks.md and compares them with the files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from conftest import ROOT


def test_docs_are_regenerated_from_their_raw_data():
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_docs.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_document_claims_a_unified_memory_outcome():
    """What a container limit does on GB10/GH200 was not measured here; no page may say it was."""
    pages = [*ROOT.glob("docs/**/*.md"), ROOT / "README.md"]
    claims = ("limit does cut", "limit cuts KV on", "the same limit does cut")
    assert not [p for p in pages for claim in claims if claim in p.read_text()]


def test_every_result_records_kvprobe_commit_or_unknown(tmp_path):
    """The environment's software block names the commit kvprobe ran from (make_docs reads it from
    there); a copy of the source that is no git checkout says `unknown` instead of guessing."""
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    read = "from kvprobe.environment.facts import collect; print(collect('native').software['kvprobe_commit'])"
    here = subprocess.run(
        [sys.executable, "-c", read],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT / "src")},
    )
    assert here.stdout.strip().removesuffix("-modified") == head, here.stderr
    shutil.copytree(ROOT / "src" / "kvprobe", tmp_path / "kvprobe")  # a copied tree: no .git above it
    copied = subprocess.run(
        [sys.executable, "-c", read],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(tmp_path)},
        cwd=tmp_path,
    )
    assert copied.stdout.strip() == "unknown", copied.stderr
