"""Benchmark: one experiment run on one GPU and on several (`kvprobe experiment --devices`), side by side.

Each variant is one whole `kvprobe experiment` run with its own --devices; the rows (wall time,
and every result's blocks, u_max, lane and trial times) go to a JSON file that
scripts/make_docs.py turns into docs/benchmarks.md, where the wall times are compared and the
figures of every cell are checked to be the same in both variants. On the two-H200 host:

    python3 scripts/bench_lanes.py experiments/lanes-h200x2.yaml --variant two-gpus=0,1 \\
        --variant one-gpu=0 --json /root/bench/lanes.json --keep /root/bench/lanes

--rounds N runs the variants N times, each round in the reverse order of the one before. Each run's
results directory is kept as KEEP/run-N-NAME (N: its row in the JSON file), its console in console.log there.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_search import ROOT, boot_id  # this directory is first on the path when run as a script

from kvprobe.results.store import ResultStore


def cell_rows(out: Path) -> list[dict]:
    """One row per result of the experiment in `out` (read by kvprobe's own loader): where it ran and
    what it found."""
    loaded, problems = ResultStore(out).load_all()
    if problems:
        raise SystemExit("\n".join(problems))
    rows = []
    for path, result in loaded:
        reference, at_u_max = result.reference, result.kv_at_u_max
        rows.append(
            {
                "lane": path.parts[-3],
                "run_id": result.run_id,
                "model": result.model,
                "condition": result.condition,
                "repeat": result.repeat,
                "status": result.status,
                "reference_blocks": reference and reference.num_blocks,
                "reference_bytes": reference and reference.bytes,
                "u_max": result.u_max,
                "kv_u_max_blocks": at_u_max and at_u_max.num_blocks,
                "engine_starts": len(result.trials),
                "trial_wall_s": [t.wall_s for t in result.trials],
                "teardown_s": [t.teardown_s for t in result.trials],
                "device": result.device,
            }
        )
    return rows


def run_variant(args: argparse.Namespace, name: str, devices: str, keep: Path | None) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"bench-lanes-{name}-") as tmp:
        out = Path(tmp) / "out"
        command = [sys.executable, "-m", "kvprobe.cli", "experiment", args.experiment, "--out", str(out)]
        command += ["--devices", devices, "--log-format", "jsonl"]
        started = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        wall = time.monotonic() - started
        if keep is not None:
            shutil.copytree(out, keep)
            (keep / "console.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise SystemExit(f"{name} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        cells = cell_rows(out)
    return {
        "variant": name,
        "devices": devices.split(","),
        "experiment": args.experiment,
        "wall_s": wall,
        "results": cells,
        "kvprobe_commit": args.commit,
        "host": platform.node(),
        "boot_id": boot_id(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", help="the experiment file")
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=GPU,GPU", help="a --devices list")
    parser.add_argument("--rounds", type=int, default=1, help="run the variants this often, alternating their order")
    parser.add_argument("--keep", default=None, help="copy each variant's results directory and log here")
    parser.add_argument("--commit", default=None, help="the kvprobe commit measured (recorded in every row)")
    parser.add_argument("--json", required=True, help="append the rows to this file")
    args = parser.parse_args()
    variants = dict(named.split("=", 1) for named in args.variant)
    path = Path(args.json)
    rows = json.loads(path.read_text()) if path.exists() else []
    keep = Path(args.keep) if args.keep else None
    chosen = list(variants)
    for round_ in range(args.rounds):
        for name in chosen if round_ % 2 == 0 else chosen[::-1]:
            row = run_variant(args, name, variants[name], keep and keep / f"run-{len(rows) + 1}-{name}")
            rows.append(row)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(rows, indent=1) + "\n")
            blocks = [(c["model"], c["repeat"], c["reference_blocks"]) for c in row["results"]]
            print(f"{name} (--devices {variants[name]}): {row['wall_s']:.0f} s, {blocks}", flush=True)


if __name__ == "__main__":
    main()
