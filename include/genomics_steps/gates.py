"""QC gates: a step's figures held against the run's minimums.

A minimum is named for its Param (``min_reads``, ``min_q30_rate``, ``min_mapping_rate``) and either
*excludes* the sample (the step finishes, its figures are published, the sample goes no further) or *flags*
it (the step succeeds and the sample is published with the flag). Every check of a step is recorded as two
``qc_metrics`` rows of tool ``gate``: ``<name>_below_min`` (1 or 0) and ``min_<name>`` (the threshold used).

The defaults follow nf-core/rnaseq's published ones where it has them (README, "QC gates").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# nf-core/rnaseq: min_trimmed_reads 10000.
DEFAULT_MIN_READS = 10_000
# nf-core/rnaseq has no Q30 minimum (its trimmer's per-read quality filter does that job): the gate is open.
DEFAULT_MIN_Q30_RATE = 0.0
# nf-core/rnaseq: min_mapped_reads 5 (a percent).
DEFAULT_MIN_MAPPING_RATE = 0.05

EXCLUDE, FLAG = "exclude", "flag"
TOOL = "gate"


@dataclass(frozen=True)
class Minimum:
    name: str  # reads | q30_rate | mapping_rate: the Param is min_<name>
    figure: str  # the step's figure (a key of its metrics) held against the threshold
    what: str  # how a reason names the figure
    threshold: float
    action: str  # EXCLUDE or FLAG
    scale: float = 1.0  # figure x scale is compared (salmon reports a percent)

    @property
    def param(self) -> str:
        return f"min_{self.name}"

    def value(self, figures: dict[str, Any]) -> float | None:
        raw = figures.get(self.figure)
        return None if raw is None else raw * self.scale

    def missed(self, figures: dict[str, Any]) -> bool:
        value = self.value(figures)
        return value is not None and value < self.threshold

    def reason(self, figures: dict[str, Any]) -> str:
        return f"{self.what} is {_show(self.value(figures))}, below {self.param} {_show(self.threshold)}"


@dataclass(frozen=True)
class Verdict:
    excluded: str | None  # the reasons, one line, or None
    flagged: str | None
    rows: list[list[Any]]  # qc_metrics rows: tool, metric, value

    def record(self) -> dict[str, Any]:
        return {"excluded": self.excluded, "flagged": self.flagged}


def judge(minimums: list[Minimum], figures: dict[str, Any]) -> Verdict:
    """The verdict of ``minimums`` on ``figures``: what excludes, what flags, and the rows recording it."""
    rows: list[list[Any]] = []
    missed: dict[str, list[str]] = {EXCLUDE: [], FLAG: []}
    for minimum in minimums:
        below = minimum.missed(figures)
        if below:
            missed[minimum.action].append(minimum.reason(figures))
        rows += [[TOOL, f"{minimum.name}_below_min", int(below)], [TOOL, minimum.param, minimum.threshold]]
    return Verdict(excluded="; ".join(missed[EXCLUDE]) or None, flagged="; ".join(missed[FLAG]) or None, rows=rows)


def threshold_problems(values: dict[str, Any], prefix: str = "") -> list[str]:
    """What is wrong with the minimums among ``values`` (min_reads: a whole number >= 1; the rates: a number
    from 0 to 1), each problem naming the field (``prefix`` + its name) and the value."""
    problems = []
    if "min_reads" in values:
        value = values["min_reads"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(f"{_field(prefix, 'min_reads')} must be a whole number of at least 1, got {value!r}")
    for name in ("min_q30_rate", "min_mapping_rate"):
        if name in values:
            value = values[name]
            if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                    or not 0 <= value <= 1):
                problems.append(f"{_field(prefix, name)} must be a number from 0 to 1, got {value!r}")
    return problems


def _field(prefix: str, name: str) -> str:
    return prefix + (name.replace("_", "-") if prefix else name)


def _show(value: Any) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.4g}"
    return str(int(value)) if isinstance(value, (int, float)) else str(value)
