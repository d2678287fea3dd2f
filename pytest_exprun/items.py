"""The test items: one per seed, one per verdict, under one collector named ``exprun``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from .protocol import BASELINE, CONTROL, CONTROL_SEED, ProtocolFailure

if TYPE_CHECKING:
    from .session import ProtocolSession
    from .settings import Settings


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
    """One training run. ``conditional`` runs happen only if the extension rule asks for them."""

    def __init__(self, *, group: str, seed: int, conditional: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.group = group
        self.seed = seed
        self.conditional = conditional

    def runtest(self) -> None:
        if self.conditional:
            outcome = self.protocol.run_extension_seed(self.group, self.seed)
        else:
            outcome = self.protocol.run_seed(self.group, self.seed)
        if isinstance(outcome, str):
            raise pytest.skip.Exception(outcome, _use_item_location=True)
        self.user_properties.append(("val_loss", f"{outcome.val_loss:.6f}"))
        self.user_properties.append(("wall_time", f"{outcome.wall_time:.3f}"))


class ControlRun(SeedRun):
    """A fresh run of the baseline's setup that fails when it no longer matches the stored baseline."""

    def runtest(self) -> None:
        record = self.protocol.run_control(self.seed)
        self.user_properties.append(("val_loss", f"{record.val_loss:.6f}"))
        self.user_properties.append(("wall_time", f"{record.wall_time:.3f}"))


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
