"""Every figure in docs/ is what its committed raw data gives: scripts/make_docs.py --check
regenerates the reports, the GPU pages and docs/benchmarks.md and compares them with the files."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

import click
import pytest

from conftest import ROOT
from kvprobe.cli import main


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


def documented_commands(text: str) -> list[list[str]]:
    """The arguments of every `kvprobe SUBCOMMAND ...` line in a page's bash blocks (continuations joined)."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command = re.match(r"^(?:sudo )?(?:\.venv/bin/)?kvprobe ([a-z].*)$", line.split("  #")[0].strip())
            if command:
                found.append(shlex.split(command.group(1)))
    return found


def parse_error(args: list[str]) -> str | None:
    """What kvprobe's own parser says of these arguments (no callback runs, no file is read)."""
    context = click.Context(main)
    command = main.get_command(context, args[0])
    if command is None:
        return f"no command {args[0]}"
    try:
        command.make_parser(click.Context(command, info_name=args[0], parent=context)).parse_args(args[1:])
    except click.UsageError as exc:
        return exc.format_message()
    return None


@pytest.mark.parametrize("page", ["README.md", "docs/field/dgx-spark.md"])
def test_every_command_a_user_is_told_to_type_parses(page):
    """A Spark owner follows the README and the field guide top to bottom: every kvprobe command line
    there names a real subcommand and real options."""
    commands = documented_commands((ROOT / page).read_text())
    assert len(commands) >= 5
    assert {" ".join(args): parse_error(args) for args in commands if parse_error(args)} == {}
    assert parse_error(["experiment", "x.yaml", "--no-such-option"]) is not None  # the check can fail
    assert "<" not in " ".join(" ".join(args) for args in commands), "a placeholder in a command"
