"""Group result documents into comparable native/container pairs; list what cannot be compared."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from kvprobe.results.schema import ResultDocument
from kvprobe.results.store import ResultStore
from kvprobe.vocabulary import LABELS, Label


@dataclass
class Group:
    """All complete runs of one model at one settings hash and software version, by label."""

    model: str
    settings_hash: str
    kvprobe: str | None
    vllm: str | None
    runs: dict[Label, list[ResultDocument]] = field(default_factory=lambda: {label: [] for label in LABELS})

    @property
    def matched(self) -> bool:
        return all(self.runs[label] for label in LABELS)


@dataclass(frozen=True)
class Problem:
    """Why results of `model` are not compared, in words."""

    model: str
    text: str

    def __str__(self) -> str:
        return self.text


def group_results(documents: Iterable[ResultDocument]) -> tuple[list[Group], list[str]]:
    """(groups, problems): unmatched groups and results that measured no KV figure are described. A
    result whose later searches failed still joins its group: what it measured is compared, and the
    report flags it (analysis.Flag `incomplete_run`)."""
    groups, problems = _grouped(documents)
    return groups, [problem.text for problem in problems]


def _grouped(documents: Iterable[ResultDocument]) -> tuple[list[Group], list[Problem]]:
    groups: dict[tuple, Group] = {}
    problems: list[Problem] = []
    for doc in documents:
        if doc.condition != doc.label:
            continue  # an experiment's own condition: compared with its baseline in report.conditions
        if doc.status != "complete" and not _measured_any(doc):
            said = "; ".join(doc.errors or ["status " + doc.status])
            problems.append(Problem(doc.model, f"{doc.where()}: incomplete ({said})"))
            continue
        key = (doc.model, doc.settings_hash, doc.versions.kvprobe, doc.versions.vllm)
        group = groups.setdefault(key, Group(*key))
        group.runs[doc.label].append(doc)
    by_model: dict[str, list[Group]] = defaultdict(list)
    for group in groups.values():
        by_model[group.model].append(group)
    for model, model_groups in sorted(by_model.items()):
        for group in model_groups:
            if group.matched:
                continue
            have = [label for label in LABELS if group.runs[label]]
            missing = [label for label in LABELS if not group.runs[label]]
            others = [g for g in model_groups if g is not group and any(g.runs[m] for m in missing)]
            differs = ""
            if others:
                other = others[0]
                diffs = [
                    f"{name} {a} vs {b}"
                    for name, a, b in (
                        ("settings hash", group.settings_hash, other.settings_hash),
                        ("kvprobe", group.kvprobe, other.kvprobe),
                        ("vLLM", group.vllm, other.vllm),
                    )
                    if a != b
                ]
                differs = f"; the {'/'.join(missing)} runs differ: {', '.join(diffs)}"
            problems.append(
                Problem(model, f"{model}: {'/'.join(have)} runs have no {'/'.join(missing)} counterpart{differs}")
            )
    return sorted(groups.values(), key=lambda g: (g.model, g.settings_hash)), problems


def _measured_any(doc: ResultDocument) -> bool:
    return any(figure is not None for figure in (doc.reference, doc.kv_at_u_max, doc.physical_capacity))


def check_pairs(store: ResultStore, models: list[str]) -> list[str]:
    """Problems that keep the named models from forming matched native/container pairs."""
    loaded, _ = store.load_all()
    groups, problems = _grouped(doc for _, doc in loaded if doc.model in models)
    matched = {g.model for g in groups if g.matched}
    said = [p for p in problems if p.model not in matched]
    return [p.text for p in said] + [
        f"{m}: no matched native/container pair"
        for m in models
        if m not in matched and m not in {p.model for p in said}
    ]
