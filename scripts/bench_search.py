"""Benchmark: engine starts and wall time of the bracketed u_max search against plain bisection.

Runs `kvprobe measure --searches u_max` twice on the same model and tolerance, once per strategy,
and prints a Markdown table for docs/benchmarks.md. On a CPU machine the tiny model runs inside a
memory-limited podman container so that u_max lies inside the range (and the machine stays safe):

    .venv/bin/python scripts/bench_search.py --container 4g            # CPU machine
    python3 scripts/bench_search.py --model deepseek-r1-distill-qwen-7b  # GPU host, natively
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(strategy: str, args: argparse.Namespace, out: Path) -> dict:
    measure = [
        "measure",
        str(ROOT / "models.yaml"),
        "--only",
        args.model,
        "--searches",
        "u_max",
        "--strategy",
        strategy,
        "--tolerance",
        str(args.tolerance),
        "--out",
        str(out),
    ]
    if args.range:
        measure += ["--range", args.range]
    if args.container:
        command = [
            sys.executable,
            "-m",
            "kvprobe.cli",
            "container",
            *measure[1:],
            "--runtime",
            "podman",
            "--rootfs",
            "/:O",
            "--memory",
            args.container,
            "--shm-size",
            "1g",
            "--memlock",
            "none",
        ]
    else:
        command = [sys.executable, "-m", "kvprobe.cli", *measure]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{strategy} run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    (result_path,) = sorted(out.glob(f"{args.model}/*.json"))
    result = json.loads(result_path.read_text())
    search = result["searches"]["u_max"]
    trials = result["trials"]
    return {
        "strategy": strategy,
        "u_max": result["u_max"],
        "failing": search["failing"],
        "converged": search["converged"],
        "engine_starts": search["engine_starts"],
        "trial_wall_s": sum(t["wall_s"] + t["teardown_s"] for t in trials),
        "wall_s": wall,
        "utilizations": [t["utilization"] for t in trials],
        "device": result["device"],
        "label": result["label"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--range", default=None, help="LO:HI (default: the model's utilization_range)")
    parser.add_argument("--container", default=None, metavar="MEMORY", help="run in podman with this memory limit")
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument("--strategies", default="bracketed,bisection")
    args = parser.parse_args()
    if args.container and args.range is None:
        args.range = "0.05:0.99"
    rows = []
    for strategy in args.strategies.split(","):
        with tempfile.TemporaryDirectory(prefix=f"bench-{strategy}-") as tmp:
            rows.append(run(strategy, args, Path(tmp)))
    machine = (
        f"{platform.node()}, {rows[0]['device']}, {'podman --memory ' + args.container if args.container else 'native'}"
    )
    print(f"Model {args.model}, tolerance {args.tolerance}, range {args.range or 'model default'}; {machine}\n")
    print("| strategy | u_max | failing | converged | engine starts | trial time (s) | wall (s) | utilizations tried |")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: | --- |")
    for row in rows:
        print(
            f"| {row['strategy']} | {row['u_max']} | {row['failing']} | {row['converged']} | {row['engine_starts']} | "
            f"{row['trial_wall_s']:.0f} | {row['wall_s']:.0f} | {', '.join(str(u) for u in row['utilizations'])} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
