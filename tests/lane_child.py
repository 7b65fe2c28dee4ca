"""A stand-in for one experiment cell's `kvprobe measure --request JSON` (tests/test_lanes.py): it
notes when it ran, on which device and into which directory, sleeps LANE_CHILD_SLEEP seconds
(default 1.5), and writes the result file a cell's measurement would (the fields the experiment
reads). SIGTERM (the experiment's interrupt) ends it with 130 and no result, as a real cell's
interrupted trial leaves none; the cell named in LANE_CHILD_EXIT_130 exits so after 1 s on its own."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import yaml


def main() -> int:
    request = json.loads(sys.argv[sys.argv.index("--request") + 1])
    cell = f"{request['condition']['name']}/r{request['only_repeat']}"
    note = {
        "cell": cell,
        "device": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "out_dir": request["out_dir"],
        "host_shared": request["start"]["host_shared"],
        "started": time.time(),
        "interrupted": False,
    }
    signal.signal(signal.SIGTERM, lambda *_: note.update(interrupted=True))
    sleep = 1.0 if os.environ.get("LANE_CHILD_EXIT_130") == cell else float(os.environ.get("LANE_CHILD_SLEEP", "1.5"))
    deadline = time.monotonic() + sleep
    while time.monotonic() < deadline and not note["interrupted"]:
        time.sleep(0.05)
    if os.environ.get("LANE_CHILD_EXIT_130") == cell:  # its own measurement interrupted
        note["interrupted"] = True
    note["ended"] = time.time()
    with open(os.environ["LANE_CHILD_NOTES"], "a") as notes:
        notes.write(json.dumps(note) + "\n")
    if note["interrupted"]:
        return 130
    for model in yaml.safe_load(Path(request["models_file"]).read_text())["models"]:
        path = Path(
            request["out_dir"], model["name"], f"{request['condition']['name']}-x-r{request['only_repeat']}.json"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        result = {
            "condition": request["condition"]["name"],
            "repeat": request["only_repeat"],
            "experiment": {"run_id": request["experiment"]["run_id"]},
            "status": "complete",
        }
        path.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
