"""Benchmark: the README's test command at two commits, side by side on one machine.

Each variant is a commit, checked out in a worktree of its own and run with this checkout's
virtual environment, whose editable install of kvprobe is pointed at that worktree for the run (so
that the tests' child processes and containers, which see the same environment, run the variant's
code too) and pointed back afterwards; its rows (wall seconds, the pytest summary
line, the slowest tests) go to a JSON file that scripts/make_docs.py turns into docs/benchmarks.md:

    .venv/bin/python scripts/bench_tests.py --variant before=ef330ae --variant after=HEAD \\
        --json docs/benchmarks/raw/test-suite.json

--rounds N runs the variants N times, each round in the reverse order of the one before. Every row
records the machine's boot id, cores and memory, so rows from another boot are refused in one table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(r"^=+ (.*(?:passed|failed).*) in [\d.]+s")
DURATION = re.compile(r"^([\d.]+)s (call|setup|teardown)\s+(\S+)")


def machine() -> dict:
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return {
        "boot_id": Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
        "cores": os.cpu_count(),
        "mem_total_kib": int(meminfo["MemTotal"].split()[0]),
        "cpu_model": next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        ),
    }


def run_variant(name: str, commit: str, workdir: Path) -> dict:
    tree = workdir / name
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), commit], check=True)
    sha = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    # the tests that run `ROOT/.venv/bin/python` in a container of this machine's root need it in the tree
    (tree / ".venv").symlink_to(ROOT / ".venv")
    pth = next((ROOT / ".venv/lib").glob("python*/site-packages/__editable__.kvprobe-*.pth"))
    own = pth.read_text()
    pth.write_text(f"{tree / 'src'}\n")
    try:
        started = time.monotonic()
        done = subprocess.run(
            [str(ROOT / ".venv/bin/python"), "-m", "pytest", "-p", "no:cacheprovider", "--durations=25"],
            cwd=tree,
            capture_output=True,
            text=True,
        )
        wall = time.monotonic() - started
    finally:
        pth.write_text(own)
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    lines = done.stdout.splitlines()
    summary = next((m.group(1) for line in reversed(lines) if (m := SUMMARY.match(line))), None)
    slowest = [
        {"seconds": float(m.group(1)), "phase": m.group(2), "test": m.group(3)}
        for line in lines
        if (m := DURATION.match(line))
    ]
    return {
        "variant": name,
        "commit": sha,
        "returncode": done.returncode,
        "wall_s": round(wall, 1),
        "summary": summary,
        "slowest": slowest,
        "not_passed": [line for line in lines if line.startswith(("FAILED ", "ERROR "))],
        "finished_at": time.time(),
        **machine(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=COMMIT")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", required=True, type=Path)
    args = parser.parse_args()
    variants = [tuple(v.split("=", 1)) for v in args.variant]
    rows = json.loads(args.json.read_text()) if args.json.exists() else []
    with tempfile.TemporaryDirectory(prefix="kvprobe-bench-tests-") as workdir:
        # readable by all: some tests run kvprobe as another user (setpriv) or in a container
        os.chmod(workdir, 0o755)
        for round_number in range(args.rounds):
            order = variants if round_number % 2 == 0 else list(reversed(variants))
            for name, commit in order:
                row = run_variant(name, commit, Path(workdir))
                row["round"] = round_number + 1
                rows.append(row)
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(rows, indent=1) + "\n")
                print(f"{name} ({row['commit'][:7]}): {row['wall_s']} s, {row['summary']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
