"""Benchmark: a whole kvprobe search, measured once per variant, on the same machine and settings.

Each variant is one `kvprobe measure` run (or `kvprobe container` with --container); the rows
(engine starts, wall time per start, total, the figures found) go to a JSON file that
scripts/make_docs.py turns into docs/benchmarks.md. A variant is one value of one measure option
(--vary OPTION=A,B) or a named set of measure flags (--variant NAME=FLAGS). The comparisons:

    # the u_max search, bracketed against plain bisection (CPU machine, tiny model in 4 GiB podman)
    .venv/bin/python scripts/bench_search.py --vary strategy=bracketed,bisection --searches u_max \\
        --container 4g --json docs/benchmarks/raw/cpu-strategy.json
    # the whole search with and without the next workers' imports overlapping a trial (GPU host),
    # beside the search as it was before (no overlap, physical capacity approached from below)
    python3 scripts/bench_search.py --model deepseek-r1-distill-qwen-7b --range 0.05:1.0 --warm-up \\
        --variant "before=--prestart off --kv-approach from-below" \\
        --variant "prestart-off=--prestart off" --variant "prestart-auto=--prestart auto" --json /root/bench/h100.json

--warm-up first starts the engine once, untimed, so that the first variant does not pay alone for
cold file caches, byte-compilation and kernel caches. On the two H100 machines in docs/benchmarks.md
whose warm-up was one reference start, the first fill start still took 6-9 s longer than every
later one; `--warm-up reference,u_max,kv_blocks` warms that path too (146 s on the third machine,
where the first fill start was no slower than the rest).

--rounds N runs the variants N times, each round in the reverse order of the one before (A B, B A,
...), so that neither variant always runs first on a warm machine.

A variant can run in a call of its own (--only-variant) and is appended to the JSON file, so a
comparison that outlasts one command still runs side by side on one machine: every row records
the machine's boot id, and make_docs.py refuses rows from different boots in one table.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def command_for(args: argparse.Namespace, flags: list[str], out: Path) -> list[str]:
    measure = [
        "--only",
        args.model,
        "--searches",
        args.searches,
        "--tolerance",
        str(args.tolerance),
        "--out",
        str(out),
        *flags,
        *args.measure_flag,
    ]
    if args.range:
        measure += ["--range", args.range]
    if args.container:
        runtime = [
            "--runtime",
            "podman",
            "--rootfs",
            "/:O",
            "--memory",
            args.container,
            "--shm-size",
            "1g",
            "--ipc-private",
            "--memlock",
            "none",
            "--stack",
            "none",
        ]
        return [sys.executable, "-m", "kvprobe.cli", "container", str(ROOT / "models.yaml"), *measure, *runtime]
    return [sys.executable, "-m", "kvprobe.cli", "measure", str(ROOT / "models.yaml"), *measure]


def measure_once(args: argparse.Namespace, name: str, flags: list[str], keep: Path | None) -> tuple[dict, float]:
    """(the result document, wall seconds) of one `kvprobe measure` with `flags`; its results
    directory is copied to `keep` (a new directory) if given."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        out = Path(tmp)
        started = time.monotonic()
        done = subprocess.run(command_for(args, flags, out), capture_output=True, text=True, cwd=ROOT)
        wall = time.monotonic() - started
        if done.returncode != 0:
            raise SystemExit(f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        (result_path,) = sorted(out.glob(f"{args.model}/*.json"))
        if keep is not None:
            subprocess.run(["cp", "-r", str(out), str(keep)], check=True)
        return json.loads(result_path.read_text()), wall


def run_variant(
    args: argparse.Namespace, name: str, flags: list[str], keep: Path | None, warm_up_s: float | None, run: int
):
    """One row: variant `name`, the `run`-th row of the JSON file (its kept directory is RUN-NAME)."""
    result, wall = measure_once(args, name, flags, keep and keep / f"{run}-{name.replace('=', '-')}")
    trials = result["trials"]
    prepared = [(t.get("worker") or {}).get("prepared") for t in trials]
    physical = result.get("physical_capacity") or {}
    return {
        "variant": name,
        "flags": flags + args.measure_flag,
        "warm_up": args.warm_up,
        "warm_up_s": warm_up_s,
        "model": args.model,
        "searches": args.searches,
        "tolerance": args.tolerance,
        "range": args.range,
        "container": args.container,
        "prestart": result["options"].get("prestart", False),
        "kv_approach": result["options"].get("kv_approach", "from_below"),
        "engine_starts": len(trials),
        "trial_wall_s": [t["wall_s"] + t["teardown_s"] for t in trials],
        "import_s": [(t.get("worker") or {}).get("timings", {}).get("import_s") for t in trials],
        "prestarted": [t.get("prestarted", False) for t in trials],
        "prepared_s": [p and p["seconds"] for p in prepared],
        "prepare_errors": [p["error"] for p in prepared if p and p["error"]],
        "cuda_initialized_while_waiting": any(p and p["cuda_initialized"] for p in prepared),
        "wall_s": wall,
        "u_max": result["u_max"],
        "u_min": result["u_min"],
        "kv_u_max_blocks": (result.get("kv_at_u_max") or {}).get("num_blocks"),
        "physical_blocks": physical.get("num_blocks"),
        "utilizations": [t["utilization"] for t in trials],
        "kv_cache_memory_bytes": [t["kv_cache_memory_bytes"] for t in trials],
        "outcomes": [t["outcome"] for t in trials],
        "fill_s": [((t.get("worker") or {}).get("timings") or {}).get("fill_s") for t in trials],
        "device": result["device"],
        "kvprobe_commit": args.commit,
        "vllm": result["versions"]["vllm"],
        "host": platform.node(),
        "boot_id": boot_id(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--searches", default="reference,u_max,u_min,kv_blocks")
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--range", default=None, help="LO:HI (default: the model's utilization_range)")
    parser.add_argument("--container", default=None, metavar="MEMORY", help="run in podman with this memory limit")
    parser.add_argument("--vary", metavar="OPTION=A,B", help="compare these values of one measure option")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=FLAGS", help="a named variant")
    parser.add_argument("--only-variant", default=None, help="run just this variant (a value of --vary, or a NAME)")
    parser.add_argument(
        "--warm-up",
        nargs="?",
        const="reference",
        metavar="SEARCHES",
        help="run these searches once, untimed, before the variants (alone: one reference start)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="run the variants this often, alternating their order")
    parser.add_argument("--measure-flag", action="append", default=[], help="passed to every measure run")
    parser.add_argument("--keep", default=None, help="copy each variant's results directory here")
    parser.add_argument("--commit", default=None, help="the kvprobe commit measured (recorded in every row)")
    parser.add_argument("--json", required=True, help="append the rows to this file")
    args = parser.parse_args()
    if args.container and args.range is None:
        args.range = "0.05:0.99"
    variants = {}
    if args.vary:
        option, values = args.vary.split("=", 1)
        variants = {f"{option}={value}": [f"--{option}", value] for value in values.split(",")}
    for named in args.variant:
        name, flags = named.split("=", 1)
        variants[name] = shlex.split(flags)
    if not variants or (args.only_variant and args.only_variant not in variants):
        parser.error("name the variants with --vary or --variant (and --only-variant one of them)")
    chosen = [args.only_variant] if args.only_variant else list(variants)
    path = Path(args.json)
    rows = json.loads(path.read_text()) if path.exists() else []
    keep = Path(args.keep) if args.keep else None
    if keep:
        keep.mkdir(parents=True, exist_ok=True)
    warm_up_s = None
    if args.warm_up:
        _, warm_up_s = measure_once(args, "warm-up", ["--searches", args.warm_up, "--no-confirm"], None)
        print(f"warm-up ({args.warm_up}): {warm_up_s:.0f} s", flush=True)
    order = [name for round_ in range(args.rounds) for name in (chosen if round_ % 2 == 0 else chosen[::-1])]
    for name in order:
        rows.append(run_variant(args, name, variants[name], keep, warm_up_s, len(rows) + 1))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rows, indent=1) + "\n")
        row = rows[-1]
        print(
            f"{row['variant']}: {row['engine_starts']} starts, {row['wall_s']:.0f} s, u_max {row['u_max']}, "
            f"KV blocks at u_max {row['kv_u_max_blocks']}, physical {row['physical_blocks']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
