"""Figures as text, for every layout and chart: rounded here, for display only.

The numbers stay exact in the summary; these functions only decide how many digits a reader sees
and how a bound, an interval and a comparison's verdict are written.
"""

from __future__ import annotations

from kvprobe.report.analysis import ModelComparison
from kvprobe.report.compare import Comparison, Unit
from kvprobe.report.stats import Summary
from kvprobe.report.words import BOUNDARY_TEXT, EVIDENCE_TEXT, GRAPHS_TEXT, VERDICT_TEXT
from kvprobe.results.schema import BoundaryKind
from kvprobe.units import gib


def fmt(value: float | None, unit: Unit, sign: bool = False) -> str:
    if value is None:
        return "-"
    if unit == "GiB":
        return gib(value, sign=sign)
    plus = "+" if sign else ""
    if unit in ("tokens", "blocks", "bytes"):
        return f"{value:{plus},.0f}"
    if unit == "fraction":
        return f"{value:{plus}.3f}"
    return f"{value:{plus}.1f}"


def fmt_stat(stat: Summary, unit: Unit, bound: bool = False) -> str:
    """mean ± sd [95% CI]; a mean that is only a lower bound starts with >=."""
    if not stat.n:
        return "-"
    text = (">= " if bound else "") + fmt(stat.mean, unit)
    if stat.sd is not None:
        text += f" ± {fmt(stat.sd, unit)}"
    if stat.ci95_low is not None:
        text += f" [{fmt(stat.ci95_low, unit)}, {fmt(stat.ci95_high, unit)}]"
    return text


def with_unit(value: float | None, unit: Unit, sign: bool = True) -> str:
    text = fmt(value, unit, sign=sign)
    return f"{text} GiB" if unit == "GiB" and value is not None else text


def p_text(comparison: Comparison) -> str:
    welch = comparison.welch
    if welch is None or welch.verdict != "tested" or welch.p_value is None:
        return VERDICT_TEXT[welch.verdict if welch else "too_few"]
    return "p < 0.001" if welch.p_value < 0.001 else f"p = {welch.p_value:.2g}"


def interval_text(comparison: Comparison, unit: Unit, negate: bool = False) -> str:
    """The change's 95% interval (Welch), or '' where no test ran."""
    welch = comparison.welch
    if welch is None or welch.ci95_low is None or welch.ci95_high is None:
        return ""
    low, high = (-welch.ci95_high, -welch.ci95_low) if negate else (welch.ci95_low, welch.ci95_high)
    return f"95% CI [{fmt(low, unit, sign=True)}, {fmt(high, unit, sign=True)}]"


def boundary_text(kinds: list[BoundaryKind]) -> str:
    return ", ".join(BOUNDARY_TEXT[k] for k in kinds) or "-"


def graphs_text(settings: dict) -> str:
    """Whether the engine captured CUDA graphs, as `vllm serve` does by default: an eager start's u_max
    and KV at u_max can differ from the served ones (docs/gpu-graphs/)."""
    eager = settings.get("enforce_eager")
    if eager is None:
        return "not recorded"
    return GRAPHS_TEXT[bool(eager)]


def change_text(comparison: Comparison, unit: Unit, negate: bool = False) -> str:
    """A comparison in words: the change with its percentage, interval and test, or why there is none.
    `negate` writes reference minus changed (a loss) instead of changed minus reference."""
    sign = -1.0 if negate else 1.0
    if comparison.evidence == "below_bound":
        amount = with_unit(sign * (comparison.change or 0.0), unit, sign=not negate)
        return f"{'at least' if negate else 'at most'} {amount} (every run below the reference's lower bound; no test)"
    if comparison.evidence == "unlike_boundaries":
        return (
            f"{EVIDENCE_TEXT['unlike_boundaries']} ({boundary_text(comparison.reference_boundary)} vs "
            f"{boundary_text(comparison.changed_boundary)})"
        )
    if not comparison.compared or comparison.change is None:
        return EVIDENCE_TEXT[comparison.evidence]
    amount = with_unit(sign * comparison.change, unit)
    if not comparison.exact:
        amount = f"≈{amount} (from the engine's 2-decimal GiB log)"
    parts = [amount]
    if comparison.change_percent is not None:
        parts[0] += f" ({sign * comparison.change_percent:+.1f}%)"
    interval = interval_text(comparison, unit, negate)
    parts += [interval] if interval else []
    parts.append(p_text(comparison))
    if comparison.evidence in ("not_significant", "no_change"):
        parts.append(EVIDENCE_TEXT[comparison.evidence])
    if comparison.left_out:
        parts.append(f"{comparison.left_out} lower-bound run(s) left out")
    return ", ".join(parts)


def caption_text(model: ModelComparison) -> str:
    cap = model.caption["native"]
    return (
        f"{cap.device} | vLLM {cap.vllm}, torch {cap.torch}, kvprobe {cap.kvprobe} | "
        f"n = {model.n['native']} native, {model.n['container']} container"
    )
