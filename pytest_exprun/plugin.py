"""pytest-exprun's options, markers and hooks: the one place where pytest meets the protocol.

The hooks stay short and hand off to ``ProtocolSession``; a plain ``pytest`` run, with
neither ``--experiment`` nor ``-m baseline``, registers nothing and starts no training.
"""

from __future__ import annotations

import ast
import dataclasses
import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Generator, Sequence

import pytest

from . import newhooks, settings as settings_mod, timings
from .executors import BUILTIN
from .trainer import bytecode

if TYPE_CHECKING:
    from .prestart import Early

# The session, the items, the rules, the statistics and the reports are imported only when the
# protocol runs (``ProtocolPlugin``): a plain ``pytest`` run pays for none of them.

PLUGIN_NAME = "exprun-protocol"
#: The markers each kind of protocol item carries (see ``items.build_items``).
_ITEM_MARKERS = ({"baseline"}, {"experiment"}, {"experiment", "verdict"})


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(newhooks)
    for builtin in BUILTIN:
        pluginmanager.register(builtin, f"exprun-executor-{builtin.name}")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("exprun", "exprun: training experiments as tests with statistical evidence")
    group.addoption(
        "--experiment", action="append", default=[], metavar="FLAG",
        help="run the protocol for an experiment: NAME passes --NAME, NAME=VALUE passes --NAME VALUE, "
        "'-...' is shell-split and passed as is. Repeat for several experiments.",
    )
    group.addoption("--exprun-rates", action="store_true", default=False,
                    help="print how often the decision rule calls a false WINNER or LOSER, and the seeds it "
                    "spends, at the configured design; start no run")
    group.addoption("--exprun-status", action="store_true", default=False,
                    help="print the research program at this scale: the baseline, every experiment's verdict, "
                    "Δ and interval, seeds and seconds, and the error budget left; start no run")
    group.addoption("--experiment-name", default=None, metavar="NAME",
                    help="report name for the single --experiment (default: made from its flags)")
    for dest, ini, default, text in settings_mod.OPTIONS:
        flag = "--exprun-" + dest.replace("_", "-")
        group.addoption(flag, dest=f"exprun_{dest}", default=None, metavar=dest.rsplit("_", 1)[-1].upper(),
                        help=f"{text} (default: {default!r}; ini: {ini})")
        parser.addini(ini, text, default=default)
    for dest, ini, text in settings_mod.FLAGS:
        flag = "--exprun-" + dest.replace("_", "-")
        group.addoption(flag, dest=f"exprun_{dest}", action="store_true", default=False, help=f"{text} (ini: {ini})")
        parser.addini(ini, text, type="bool", default=False)


def _selects_protocol(markexpr: str, markers: set[str]) -> bool:
    """Does ``-m markexpr`` select an item with these markers but not an unmarked unit test?

    ``-m baseline`` does; ``-m "not baseline"`` or ``-m "not slow"`` select ordinary tests
    and must not start the protocol.
    """
    try:
        tree = ast.parse(markexpr, mode="eval").body
    except SyntaxError:
        return False  # pytest reports the bad expression itself
    return _holds(tree, markers) and not _holds(tree, set())


def _holds(node: ast.AST, markers: set[str]) -> bool:
    """Evaluate a ``-m`` expression (names, and/or/not, ``name(key=value)``) for an item's markers."""
    if isinstance(node, ast.BoolOp):
        values = (_holds(v, markers) for v in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return not _holds(node.operand, markers)
    if isinstance(node, ast.Call):
        node = node.func
    return isinstance(node, ast.Name) and node.id in markers


def protocol_requested(config: pytest.Config) -> tuple[bool, bool]:
    """(protocol wanted at all, baseline items wanted even without an experiment)."""
    markexpr = (config.getoption("markexpr", default="") or "").strip()
    by_mark = bool(markexpr) and any(_selects_protocol(markexpr, markers) for markers in _ITEM_MARKERS)
    # Every protocol item is built then, and pytest's own -m filter picks among them.
    return bool(config.getoption("experiment")) or by_mark, by_mark


@pytest.hookimpl(trylast=True)  # after the terminal's: what an executor started here says is shown
def pytest_configure(config: pytest.Config) -> None:
    for name, text in (
        ("baseline", "a baseline training run of the exprun protocol"),
        ("experiment", "an experiment training run or verdict of the exprun protocol"),
        ("verdict", "the pass/fail verdict of an exprun experiment"),
    ):
        config.addinivalue_line("markers", f"{name}: {text}")
    timings.register(config)
    wanted, _ = protocol_requested(config)
    if wanted and getattr(config.option, "numprocesses", None) not in (None, 0, "0"):
        raise pytest.UsageError(
            "exprun runs the protocol in one pytest process (its runs share a baseline and a lock): drop -n; "
            "to train several seeds at once use --exprun-executor=gpus, warm or slurm"
        )
    if wanted:
        settings = settings_mod.load(config)
        problem = bytecode.unusable(settings.bytecode_cache)
        if problem is not None:  # a missing cache costs start-up time, never a run
            config.issue_config_time_warning(BytecodeCacheWarning(problem), stacklevel=2)
            settings = dataclasses.replace(settings, bytecode_cache=None)
        from . import prestart  # the worker and the aside helper start before exprun's own heavier imports

        early = prestart.start_early(config, settings, with_baseline=protocol_requested(config)[1])
        with timings.span("exprun's protocol plugin: imports, session object"):
            config.pluginmanager.register(ProtocolPlugin(config, settings, early), PLUGIN_NAME)


class BytecodeCacheWarning(pytest.PytestWarning):
    """The trainers' bytecode cache (``--exprun-bytecode-cache``) cannot be used; runs go on without it."""


def pytest_cmdline_main(config: pytest.Config) -> int | None:
    """``--exprun-rates``: the rule's simulated error rates at this design, then exit; nothing runs."""
    if config.getoption("exprun_status"):
        from _pytest.main import wrap_session

        settings = settings_mod.load(config)
        return int(wrap_session(config, lambda config, session: _show_status(config, settings)))
    if not config.getoption("exprun_rates"):
        return None
    from _pytest.main import wrap_session  # as pytest's own --cache-show and --fixtures do

    settings = settings_mod.load(config)  # a bad option: pytest's one-line error, before any session output
    return int(wrap_session(config, lambda config, session: _show_rates(config, settings)))


def _show_rates(config: pytest.Config, settings: settings_mod.Settings) -> int:
    from .decide import rates, sequential_rates

    reporter = config.pluginmanager.get_plugin("terminalreporter")
    chosen = config.getoption("exprun_decide") is not None or settings.decide != settings_mod.FIXED
    tables = []
    if not chosen or settings.decide == settings_mod.FIXED:
        tables.append(rates.rates_report(settings))
    if not chosen or settings.decide == settings_mod.SEQUENTIAL:
        tables.append(sequential_rates.rates_table(settings.design))
    text = "\n".join(tables)
    for line in text.splitlines():
        reporter.write_line(line) if reporter is not None else print(line)
    return 0


def _show_status(config: pytest.Config, settings: settings_mod.Settings) -> int:
    from .reports import status

    reporter = config.pluginmanager.get_plugin("terminalreporter")
    return status.show(settings, reporter.write_line if reporter is not None else print)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")


def _stop_on_termination() -> dict[signal.Signals, signal.Handlers | int | Callable[[int, FrameType | None], Any] | None]:
    """Treat SIGTERM and SIGHUP like Ctrl-C, so the running trainer's group is ended too.

    Trainers run in their own process group: if pytest died of a plain SIGTERM (a job
    scheduler, ``kill``, a closed terminal), they would keep running, unseen.
    """
    previous: dict[signal.Signals, signal.Handlers | int | Callable[[int, FrameType | None], Any] | None] = {}
    if threading.current_thread() is not threading.main_thread():
        return previous
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:
            previous[sig] = signal.signal(sig, _interrupt)
    return previous


class ProtocolPlugin:
    """Hooks that exist only in a session that runs the protocol."""

    def __init__(self, config: pytest.Config, settings: settings_mod.Settings, early: Early | None = None) -> None:
        self.config = config
        self.settings = settings
        from .session import ProtocolSession
        from .trainer.lines import parse_step_line
        from .verdicts import FixedRule, SequentialRule

        self.protocol = ProtocolSession(config, settings, early)
        self.deselected: list[pytest.Item] = []
        self.items: list[pytest.Item] = []
        config.pluginmanager.register(FixedRule(), "exprun-rule-fixed")
        config.pluginmanager.register(SequentialRule(), "exprun-rule-sequential")
        self._parse = settings.trainer_io.parse_line() or parse_step_line
        self._costed = False

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self) -> None:
        """The store's simulated figures, before the header, where the sequential design is calibrated."""
        from . import simcache

        simcache.load(self.protocol)

    def pytest_sessionfinish(self) -> None:
        """What was started early for runs that never began is ended here (by its process id)."""
        from . import prestart

        prestart.close_unused(self.protocol)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        """Before the session's first experiment run: what the design expects the experiments to cost."""
        from .items import SeedRun
        from .names import BASELINE

        if self._costed or not isinstance(item, SeedRun) or item.group == BASELINE:
            return
        self._costed = True
        from .program_cost import announcement

        self.protocol.terminal.say(announcement(self.settings,
                                                self.protocol.values(BASELINE, self.settings.baseline_seeds)[0]))

    @pytest.hookimpl(trylast=True)
    def pytest_exprun_parse_line(self, config: pytest.Config, line: str) -> tuple[int, float] | None:
        """The default result parser: ``exprun_line_pattern`` if set, else ``Step N | val_loss: X | ...``."""
        return self._parse(line)

    def pytest_report_header(self) -> list[str]:
        s = self.settings
        return [
            f"exprun: {' '.join(s.command)} | train tokens {s.train_tokens} ({s.scale}) | "
            f"baseline seeds {','.join(map(str, s.baseline_seeds))} | executor {s.executor} | "
            f"research dir {s.research_dir}"
        ] + self._decide_header()

    def _decide_header(self) -> list[str]:
        """The sequential mode's design in one line, since it changes what a verdict means."""
        s = self.settings
        if s.decide != settings_mod.SEQUENTIAL:
            return []
        d = s.design
        return [f"exprun: decide sequential | alpha {d.alpha:g} | min effect {d.min_effect:g} sigma | "
                f"looks {','.join(map(str, d.looks))} experiment seeds | {d.method}"]

    def pytest_ignore_collect(self, collection_path: object, config: pytest.Config) -> bool | None:
        """An experiment session runs only the protocol: skip importing the project's test files."""
        return True if self.settings.experiments else None

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, session: pytest.Session, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        from .items import build_items

        _, with_baseline = protocol_requested(config)
        ours = build_items(session, self.protocol, self.settings, include_baseline=with_baseline)
        self.items = ours
        if ours:
            # Report our collection like any collector's, so counts and --co add up.
            collector = ours[0].parent
            assert collector is not None  # every protocol item sits under the exprun collector
            config.hook.pytest_collectreport(
                report=pytest.CollectReport(collector.nodeid, "passed", None, list[pytest.Item | pytest.Collector](ours)))
        if self.settings.experiments:
            # An experiment session runs the protocol, not the project's unit tests.
            if items:
                config.hook.pytest_deselected(items=list(items))
            items[:] = ours
        else:
            items.extend(ours)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, object, object]:
        from .items import SeedRun

        runs = [item for item in session.items if isinstance(item, SeedRun)]
        if session.config.option.collectonly or not any(
            item for item in session.items if hasattr(item, "protocol")
        ):
            return (yield)
        interrupted = True
        previous = _stop_on_termination()
        try:
            self.protocol.start(runs)
            result = yield
            interrupted = bool(session.shouldstop or session.shouldfail)
            return result
        finally:
            self.protocol.finish(cancel=interrupted)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def pytest_deselected(self, items: Sequence[pytest.Item]) -> None:
        """Keep the protocol's deselected items (``-k``), to print the command that measures them."""
        from .items import SeedRun, VerdictItem

        self.deselected += [item for item in items if isinstance(item, (SeedRun, VerdictItem))]

    def _unmeasured_line(self) -> list[str]:
        """The exact command that measures the seeds this session left unmeasured (failed or deselected)."""
        from .items import SeedRun
        from .names import BASELINE
        from .terminal import rerun_command

        if self.config.option.collectonly:
            return []
        missing = [i for i in self.items if isinstance(i, SeedRun) and not i.conditional
                   and not self.protocol.collected(i.group, [i.seed])]
        if not missing:
            return []
        deselected = [i for i in missing if i in self.deselected]
        names = ", ".join(i.name for i in missing)
        what = f"{len(missing)} seed{'s' if len(missing) > 1 else ''} not measured ({names})"
        if not deselected:
            return [f"{what}; to run {'them' if len(missing) > 1 else 'it'} (stored runs are reused): "
                    f"{rerun_command(self.config.invocation_params.args, [], keep_selection=True)}"]
        groups = {i.group for i in missing}
        affected = [e.name for e in self.settings.experiments if BASELINE in groups or e.name in groups]
        # Their seeds not yet stored (extension seeds too: they run only if needed), and their verdicts.
        select = [i.name for i in self.items if isinstance(i, SeedRun) and (i.group in groups or i.group in affected)
                  and not self.protocol.collected(i.group, [i.seed])]
        select += [f"{name}[verdict]" for name in affected]
        select += [i.name for i in self.deselected if not isinstance(i, SeedRun) and i.name not in select]
        return [f"{what}, {len(deselected)} of them deselected; to measure {'them' if len(missing) > 1 else 'it'} "
                f"(stored runs are reused): {rerun_command(self.config.invocation_params.args, select)}"]

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.protocol.executor is None:  # nothing ran: --co, or stopped before the first run
            return
        from .terminal import grep_lines

        lines = self.protocol.summary_lines() + self._unmeasured_line()
        lines += grep_lines([] if self.protocol.judge is None else self.protocol.judge.outcomes)
        if lines:
            terminalreporter.write_sep("=", "exprun")
            for line in lines:
                terminalreporter.write_line(line)
