"""Reports: what each one says (template contexts), JSON twins, the summary, the step summary.

Everything here is computed from run records; nothing is read back from a rendered file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from .rates import Power, power_analysis
from .stats import Interval, Paired, SignificanceTest, Summary, bootstrap_interval, mann_whitney, paired_seeds, welch_test


@dataclass(frozen=True)
class Evidence:
    welch: SignificanceTest
    mann_whitney: SignificanceTest
    bootstrap: Interval
    paired: Paired
    power: Power



def evaluate(baseline: Mapping[int, float], experiment: Mapping[int, float],
             baseline_summary: Summary, experiment_summary: Summary) -> Evidence:
    """Every val_loss statistic of one experiment report, keyed by seed for the pairing."""
    b, e = list(baseline.values()), list(experiment.values())
    return Evidence(
        welch=welch_test(b, e),
        mann_whitney=mann_whitney(b, e),
        bootstrap=bootstrap_interval(b, e),
        paired=paired_seeds(baseline, experiment),
        power=power_analysis(baseline_summary, experiment_summary),
    )

