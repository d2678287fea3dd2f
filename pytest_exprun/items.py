"""The test items: one per seed, one per verdict, under one collector named ``exprun``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pytest

from .names import BASELINE, CONTROL, CONTROL_SEED, SEEDS, ProtocolFailure
from .settings import SEQUENTIAL

if TYPE_CHECKING:
    from .model import RunRecord
    from .session import ProtocolSession
    from .settings import Settings
    from .decide.sequential_design import Design


class ProtocolCollector(pytest.Collector):
    """Parent of every protocol item, so node ids read ``exprun::baseline[seed42]``."""

    def collect(self) -> list[pytest.Item]:
        return []  # items are made directly by ``build_items``

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, "exprun"


class _ProtocolItem(pytest.Item):
    protocol: "ProtocolSession"

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ProtocolFailure):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo, style=style))

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.nodeid, 0, self.name


class SeedRun(_ProtocolItem):
    """One training run. ``conditional`` runs happen only if the extension rule asks for them.

    In the sequential mode ``look`` is the first look (0-based) that needs the seed; a
    conditional one runs only when the decision at the look before is CONTINUE.
    """

    def __init__(self, *, group: str, seed: int, conditional: bool = False, look: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.group = group
        self.seed = seed
        self.conditional = conditional
        self.look = look

    def runtest(self) -> None:
        if self.conditional and self.look is not None:
            outcome = self.protocol.run_look_seed(self.group, self.seed, self.look)
        elif self.conditional:
            outcome = self.protocol.run_extension_seed(self.group, self.seed)
        else:
            outcome = self.protocol.run_seed(self.group, self.seed)
        if isinstance(outcome, str):
            # A seed reused from the store still reports what it measured (JUnit XML, other plugins).
            stored = self.protocol.collected(self.group, [self.seed]).get(self.seed)
            if stored is not None:
                self.user_properties.extend(measured_properties(stored, self.metric))
            raise pytest.skip.Exception(outcome, _use_item_location=True)
        self.user_properties.extend(measured_properties(outcome, self.metric))

    @property
    def metric(self) -> str:
        """The name of the value a run records (``exprun_result``'s key, a pattern's group, or val_loss)."""
        return self.protocol.settings.trainer_io.metric_name


def measured_properties(record: "RunRecord", metric: str = "val_loss") -> list[tuple[str, str]]:
    """A run's measurements as test properties: its value under the metric's name and wall time,
    and CPU time, GPU time and throughput where they were recorded."""
    found = [(metric, f"{record.val_loss:.6f}"), ("wall_time", f"{record.wall_time:.3f}")]
    for name, value, digits in (("cpu_time", record.cpu_time, 3), ("gpu_time", record.gpu_time, 3),
                                ("tokens_per_second", record.tokens_per_second, 1)):
        if value is not None:
            found.append((name, f"{value:.{digits}f}"))
    return found


class ControlRun(SeedRun):
    """A fresh run of the baseline's setup that fails when it no longer matches the stored baseline."""

    def runtest(self) -> None:
        record = self.protocol.run_control(self.seed)
        self.user_properties.extend(measured_properties(record, self.metric))


class VerdictItem(_ProtocolItem):
    """Passes when the experiment's verdict is accepted (WINNER, or NEUTRAL with --exprun-accept)."""

    def __init__(self, *, experiment: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.experiment = experiment

    def runtest(self) -> None:
        outcome = self.protocol.verdict(self.experiment)
        cmp = outcome.comparison
        assert cmp is not None and cmp.verdict is not None
        self.user_properties.append(("verdict", cmp.verdict.value))
        if not outcome.accepted:  # not an accepted verdict, or the control run failed
            raise ProtocolFailure(outcome.message)


def build_items(session: pytest.Session, protocol: "ProtocolSession", settings: "Settings",
                include_baseline: bool) -> list[pytest.Item]:
    """Baseline seeds, the control run, then per experiment its seeds, extension seeds and verdict."""
    parent = ProtocolCollector.from_parent(session, name="exprun", nodeid="exprun")
    items: list[pytest.Item] = []

    def add(item: _ProtocolItem, *markers: str) -> None:
        item.protocol = protocol
        for marker in markers:
            item.add_marker(marker)
        items.append(item)

    if include_baseline or settings.experiments:
        for seed in settings.baseline_seeds:
            add(SeedRun.from_parent(parent, name=f"{BASELINE}[seed{seed}]", group=BASELINE, seed=seed), BASELINE)
        if settings.control:
            add(ControlRun.from_parent(parent, name=f"{CONTROL}[seed{CONTROL_SEED}]", group=CONTROL,
                                       seed=CONTROL_SEED), "experiment")
    if settings.decide == SEQUENTIAL and settings.experiments:
        add_sequential_items(parent, settings, settings.design, add)
        return items
    for exp in settings.experiments:
        for seed in settings.experiment_seeds:
            add(SeedRun.from_parent(parent, name=f"{exp.name}[seed{seed}]", group=exp.name, seed=seed), "experiment")
        for seed in settings.extension_seeds:
            add(
                SeedRun.from_parent(parent, name=f"{exp.name}[seed{seed}]", group=exp.name, seed=seed,
                                    conditional=True),
                "experiment",
            )
        add(VerdictItem.from_parent(parent, name=f"{exp.name}[verdict]", experiment=exp.name),
            "experiment", "verdict")
    return items


def add_sequential_items(parent: ProtocolCollector, settings: "Settings", design: "Design",
                         add: Callable[..., None]) -> None:
    """Every seed the design can ever need, look by look: the first look's runs, later ones on condition.

    Look by look rather than experiment by experiment, because several experiments are decided
    together at each look (the step-down); a look's new baseline seeds (beyond the usual five)
    come before its experiment seeds.
    """
    for look, (n_exp, n_base) in enumerate(zip(design.looks, design.baseline_looks)):
        later = look > 0
        new_base = SEEDS[design.baseline_looks[look - 1] if later else len(settings.baseline_seeds):n_base]
        for seed in new_base:
            add(SeedRun.from_parent(parent, name=f"{BASELINE}[seed{seed}]", group=BASELINE, seed=seed,
                                    conditional=later, look=look), BASELINE)
        new_exp = SEEDS[design.looks[look - 1] if later else 0:n_exp]
        for exp in settings.experiments:
            for seed in new_exp:
                add(SeedRun.from_parent(parent, name=f"{exp.name}[seed{seed}]", group=exp.name, seed=seed,
                                        conditional=later, look=look), "experiment")
    for exp in settings.experiments:
        add(VerdictItem.from_parent(parent, name=f"{exp.name}[verdict]", experiment=exp.name),
            "experiment", "verdict")
