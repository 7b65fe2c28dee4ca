"""Before an experiment's first cell: everything a cell would otherwise fail on, checked once.

Each model must fit this machine's pool by `kvprobe predict` (a model that cannot is refused with
the reason, not started once per cell); every container condition's runtime must answer and its
image exist, and its kvprobe, vLLM and torch equal the native side's (the host's, or none to
compare where the native side runs from the same image); a native-from-image condition needs
root and its image. Every problem is named at once (InputError, exit 2).
"""

from __future__ import annotations

import os

from kvprobe.errors import InputError
from kvprobe.experiment.spec import Experiment
from kvprobe.output.prediction import predict_models
from kvprobe.units import gib


def fit_problems(experiment: Experiment, memory: str | None = None) -> list[str]:
    """Models that cannot fit the pool (this machine's, or `memory`) at their own utilization."""
    done = predict_models(str(experiment.models_file), memory, None, tuple(m.name for m in experiment.models), None)
    pool = f"{gib(done.pool.bytes, 1, unit=True)}, {done.pool.source}"
    return [
        f"{experiment.path}: model '{row.prediction.model}' cannot fit this pool ({pool}): "
        f"{row.assessment.reason} (kvprobe predict); remove it from `only`"
        for row in done.rows
        if row.assessment.verdict == "does not fit"
    ]


def side_problems(experiment: Experiment) -> list[str]:
    """Each distinct container and image checked once: runtime, image, root, versions."""
    from kvprobe.environment.facts import collect
    from kvprobe.measure.chroot import image_digest
    from kvprobe.measure.container_session import ready_settings
    from kvprobe.measure.containers import preflight, probe_environment, version_mismatch

    problems: list[str] = []
    native = None
    seen: set[str] = set()
    for condition in experiment.conditions:
        where = f"{experiment.path}: condition '{condition.name}'"
        image = condition.native_from_image
        if image is not None:
            if os.geteuid() != 0:
                problems.append(f"{where}: field 'native_from_image': a chroot needs root (run kvprobe as root)")
            try:
                if image.image is not None:
                    image_digest(image.runtime, image.image)
            except InputError as exc:
                problems.append(f"{where}: field 'native_from_image': {exc}")
        box = condition.container
        if box is None or box.model_dump_json() in seen:
            continue
        seen.add(box.model_dump_json())
        try:
            settings = ready_settings(box)
            preflight(settings)
            inside = probe_environment(settings, [])
        except InputError as exc:
            problems.append(f"{where}: field 'container': {exc}")
            continue
        if box.native_side == "host":
            native = native or collect("native").software
            problems += [f"{where}: field 'container': {text}" for text in version_mismatch(native, inside.software)]
    return problems


def check(experiment: Experiment) -> None:
    """Refuse the experiment (InputError) with every problem found, one per line."""
    problems = fit_problems(experiment) + side_problems(experiment)
    if problems:
        raise InputError("\n".join(problems))
