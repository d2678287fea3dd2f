"""Which rule's statements a report makes, from the stored decision alone, and the numbers and
JSON that go with them: the rule that decided, its design, the decimals a report needs, the
distance label, the JSON twin's sections, and the summary's family-wise rates.

A report speaks of the rule that decided (``evidence.RULES``), read from the stored
``Decision`` (its mode, its sequential record, its own reason), never from the session's
options: a sequential decision re-rendered in a fixed-mode session stays a sequential report.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..model import Decision, DecisionMode, LookRecord

if TYPE_CHECKING:
    from ..model import RunRecord
    from ..decide.evidence import Evidence
    from ..decide.protocol import Comparison, MetricComparison, Ranked
    from ..decide.sequential_design import Design as SequentialDesign


def rule_of(decision: Decision) -> str:
    """"fixed" (the 2σ rule), "sequential" (the sequential rule) or "own" (a project's rule, with its reason)."""
    if decision.reason is not None:
        return "own"
    if decision.mode is DecisionMode.SEQUENTIAL and decision.sequential is not None:
        return "sequential"
    return "fixed"


def sequential_design(decision: Decision) -> "SequentialDesign | None":
    """The sequential design a stored decision was made with (recalibrated, cached), or None."""
    if rule_of(decision) != "sequential" or decision.sequential is None:
        return None
    from ..decide.sequential_figures import design_of
    from ..names import ProtocolError

    try:
        return design_of(decision.sequential.design)
    except (ProtocolError, KeyError, TypeError, ValueError):
        return None  # a design this version cannot plan: the report says its figures are missing


def digits_of(cmp: "Comparison", ev: "Evidence | None") -> int:
    """Decimals for a report's values of the metric: 4, or enough to show the baseline's σ and the interval's
    width to 2 significant digits (a Δ far below them is noise at that precision, and prints as 0)."""
    from ..decide.evidence import decimals_for

    m = cmp.val_loss
    width = None
    if ev is not None and ev.interval.low is not None and ev.interval.high is not None:
        width = ev.interval.high - ev.interval.low
    return decimals_for(m.baseline.std, width)


def band_text(m: "MetricComparison") -> str:
    """How far the means are apart in baseline σ, said without a verdict (that is the rule's)."""
    if m.sigmas is None:
        return "n/a (baseline σ is 0)"
    size = abs(m.sigmas)
    return "≥ 2σ" if size >= 2 else ("1σ to 2σ" if size >= 1 else "< 1σ")


def twin_comparison(cmp: "Comparison") -> dict[str, Any]:
    """The comparison for the JSON twin: the decision's verdict only, the σ distance by a name that says what it is."""
    data = asdict(cmp)
    for key, m in (("val_loss", cmp.val_loss), ("wall_time", cmp.wall_time)):
        data[key].pop("significance", None)
        data[key]["sigma_distance"] = band_text(m)
    return data


def twin_evidence(ev: "Evidence") -> dict[str, Any]:
    """The evidence for the JSON twin; what the 2σ rule would say is ``two_sigma_verdict``, never ``verdict``."""
    data = asdict(ev)
    data["coverage"] = None if ev.coverage is None else {**asdict(ev.coverage), "mc_error": ev.coverage.mc_error}
    if ev.rule != "fixed":  # the 2σ rule's design did not decide: not stated as if it had
        data["design"] = data["power"]["design"] = None
    return data


def renamed(data: Any, metric: str) -> Any:
    """``data`` with the key (and metric label) ``val_loss`` renamed to the metric's name."""
    if isinstance(data, dict):
        return {(metric if k == "val_loss" else k): renamed(v, metric) for k, v in data.items()}
    if isinstance(data, list):
        return [renamed(v, metric) for v in data]
    return metric if data == "val_loss" else data


def family_statements(ranked: Sequence["Ranked"], rules: Mapping[str, str], looks: Mapping[str, LookRecord | None],
                      n_first: int, n_extension: int) -> list[dict[str, Any]]:
    """Per Holm family of the summary: the family-wise false-WINNER rate of each procedure that decided in it.

    The 2σ rule's members: ``rates.familywise_false_winner`` for that many experiments on one
    baseline. The sequential rule's: the step-down over the family it was decided in (stored
    with each decision), ``sequential_figures.familywise_false_winner`` for its K. A project's
    own rule: no rate (it is the project's to state). ``rules`` and ``looks`` are by experiment name.
    """
    from ..decide import rates
    from ..decide.sequential_figures import design_of, familywise_false_winner
    from ..names import ProtocolError

    by_name = {r.name: (rules[r.name], looks.get(r.name)) for r in ranked}
    out = []
    for family in sorted({r.family for r in ranked}):
        members = [r for r in ranked if r.family == family]
        n_base = members[0].n_baseline
        fixed = [r for r in members if by_name[r.name][0] == "fixed"]
        statements: list[dict[str, Any]] = []
        if fixed:
            statements.append({"rule": "fixed", "size": len(fixed), "trials": rates.FAMILY_TRIALS,
                               "false_winner": rates.familywise_false_winner(len(fixed), max(n_base, 2), n_first,
                                                                             n_extension)})
        groups: dict[tuple[str, ...], LookRecord] = {}
        for r in members:
            rule, look = by_name[r.name]
            if rule == "sequential" and look is not None:
                groups.setdefault(look.family, look)
        for names, look in sorted(groups.items()):
            try:
                design = design_of(look.design)
            except (ProtocolError, KeyError, TypeError, ValueError):
                continue  # a design this version cannot plan: no rate is stated rather than a wrong one
            found = familywise_false_winner(design, len(names))
            statements.append({"rule": "sequential", "size": len(names), "names": list(names),
                               "trials": found.trials, "false_winner": found.false_winner,
                               "mc_error": found.mc_error, "alpha": look.design["alpha"]})
        own = [r.name for r in members if by_name[r.name][0] == "own"]
        if own:
            statements.append({"rule": "own", "size": len(own), "names": own})
        out.append({"family": family, "size": len(members), "n_baseline": n_base, "statements": statements})
    return out


def twin_run(record: "RunRecord") -> dict[str, Any]:
    """One run as the twin keeps it: its value, wall time, CPU time, throughput (None where the
    trainer did not report them) and GPU time where present, as the report's tables show them."""
    data: dict[str, Any] = {"seed": record.seed, "val_loss": record.val_loss, "wall_time": record.wall_time,
                            "cpu_time": record.cpu_time, "tokens_per_second": record.tokens_per_second}
    if record.gpu_time is not None:
        data["gpu_time"] = record.gpu_time
    data["environment"] = record.extra.get("environment", {})
    data["curve"] = [list(p) for p in record.curve]
    return data


def twin_wall_clock(wall_clock: Mapping[str, Any]) -> dict[str, Any]:
    """The Wall Clock section for the twin: each group's times, the test (ratio, interval, p, α),
    and whether the loaded-machine rule flagged a run, and why."""
    test = wall_clock["test"]

    def group(timing: Mapping[str, Any]) -> dict[str, Any]:
        return {key: None if value is None else asdict(value) for key, value in timing.items()}

    return {
        "baseline": group(wall_clock["baseline"]),
        "experiment": group(wall_clock["experiment"]),
        "test": {"method": "Welch's t on log wall time", "ratio": test.ratio, "low": test.low, "high": test.high,
                 "p_value": test.p_value, "alpha": test.alpha, "significant": test.significant, "reason": test.reason,
                 "finding": wall_clock["finding"]},
        "loaded_machine": {"rule": f"a run under {wall_clock['loaded_fraction']:g}x its group's median throughput "
                                   "or CPU seconds per wall second counts as loaded",
                           "fraction": wall_clock["loaded_fraction"], "loaded": bool(test.loaded),
                           "runs": [asdict(r) for r in test.loaded], "trusted": test.trusted,
                           "unequal_load": test.unequal, "why": wall_clock["distrust"]},
    }


def twin_program(decision: Decision, program: Mapping[str, Any] | None) -> dict[str, Any]:
    """The margin's test and the decision's place in its program, as the report states them: the
    margin record (its TOST, what would settle it), the LOND step (its level α_i) or the program's
    uncontrolled family-wise rate, and the decision's cost."""
    if not program:
        return {"margin": None, "program": None}
    margin = None if decision.margin is None else {**decision.margin.to_json(), "settle_command": program["settle"]}
    return {"margin": margin,
            "program": {"position": program["position"], "statement": program["text"],
                        "step": None if decision.program is None else decision.program.to_json(),
                        "uncontrolled_familywise": program["familywise"],
                        "cost": {"runs": program["runs"], "seconds": program["seconds"],
                                 "experiment_seconds": program["experiment_seconds"]}}}
