"""Wall time as a measurement: CPU time and throughput on every record, a stated test of the
change, a stated rule for a loaded machine, and JUnit properties on reused runs."""

from __future__ import annotations

import json
import math
import random
import shlex

import pytest
from scipy import stats as sps

from conftest import Project
from pytest_exprun.decide import wall_time
from pytest_exprun.decide.wall_time import Timing
from pytest_exprun.model import RunRecord

WINNER = {"--use_x": {"42": 1.90, "137": 1.91, "256": 1.89}}


def timings(times: list[float], cpu: list[float] | None = None) -> list[Timing]:
    return [Timing(i, t, None if cpu is None else cpu[i]) for i, t in enumerate(times)]


# ------------------------------------------------------------------------- the test
def test_the_ratio_and_p_value_are_welch_on_log_wall_time() -> None:
    base, exp = [230.0, 232.0, 228.0, 231.0, 229.0], [256.0, 258.0, 255.0]
    found = wall_time.compare(timings(base), timings(exp))
    logs_b, logs_e = [math.log(t) for t in base], [math.log(t) for t in exp]
    welch = sps.ttest_ind(logs_e, logs_b, equal_var=False)
    assert found.p_value == pytest.approx(welch.pvalue, rel=1e-9)
    ratio = math.exp(sum(logs_e) / 3 - sum(logs_b) / 5)
    assert found.ratio == pytest.approx(ratio)
    interval = welch.confidence_interval(0.95)
    assert (found.low, found.high) == (pytest.approx(math.exp(interval.low)), pytest.approx(math.exp(interval.high)))
    assert found.trusted and found.significant
    assert found.headline().startswith(f"{(ratio - 1) * 100:.1f}% slower, shown at α = 0.05")


def test_its_false_alarm_rate_when_nothing_changed_is_its_alpha() -> None:
    rng = random.Random(7)
    trials, alarms = 4000, 0
    for _ in range(trials):
        base = timings([230 * math.exp(rng.gauss(0, 0.03)) for _ in range(5)])
        exp = timings([230 * math.exp(rng.gauss(0, 0.03)) for _ in range(3)])
        alarms += bool(wall_time.compare(base, exp).significant)
    rate = alarms / trials
    assert abs(rate - 0.05) < 4 * math.sqrt(0.05 * 0.95 / trials), rate


def test_a_difference_within_the_spread_is_not_called_and_never_labelled_noise() -> None:
    found = wall_time.compare(timings([230, 260, 200, 245, 215]), timings([236, 210, 250]))
    assert found.significant is False
    assert "not shown at α = 0.05" in found.headline()
    assert "noise" not in found.headline() + found.finding()


def test_two_runs_or_a_zero_wall_time_give_no_ratio_with_the_reason() -> None:
    assert wall_time.compare(timings([1.0]), timings([1.0, 2.0])).headline() == "n/a (fewer than 2 runs in a group)"
    assert "wall time is 0" in wall_time.compare(timings([0.0, 1.0]), timings([1.0, 2.0])).headline()


# --------------------------------------------------------------- the loaded machine
def test_a_run_at_under_0_7x_its_groups_median_throughput_is_loaded() -> None:
    found = wall_time.compare(timings([230, 232, 528, 231, 229]), timings([256, 258, 255]))
    assert [(r.group, r.seed) for r in found.loaded] == [("baseline", 2)]
    assert not found.trusted
    assert "not to be trusted: the machine looks loaded (baseline[seed2] ran at 0.44x" in found.headline()
    assert "cannot be trusted" in (found.distrust() or "")


def test_a_run_that_got_little_cpu_per_wall_second_is_loaded() -> None:
    # Same wall times, but seed 1 got a third of the CPU the others did: something else ran.
    base = timings([100, 101, 99, 100, 100], cpu=[95, 96, 30, 95, 94])
    found = wall_time.loaded_runs("baseline", base)
    assert [r.seed for r in found] == [2] and "CPU seconds per wall second" in found[0].why


def test_a_change_that_truly_halves_the_speed_is_not_a_loaded_machine() -> None:
    found = wall_time.compare(timings([100, 101, 99, 100, 102]), timings([200, 203, 198]))
    assert found.loaded == () and found.trusted and found.ratio == pytest.approx(2.0, rel=0.02)


@pytest.mark.parametrize(("spread", "limit"), [(0.02, 0.002), (0.05, 0.002), (0.10, 0.01)])
def test_quiet_runs_almost_never_look_loaded(spread: float, limit: float) -> None:
    rng = random.Random(11)
    trials = 3000
    alarms = sum(bool(wall_time.compare(timings([100 * math.exp(rng.gauss(0, spread)) for _ in range(5)]),
                                        timings([100 * math.exp(rng.gauss(0, spread)) for _ in range(3)])).loaded)
                 for _ in range(trials))
    assert alarms / trials < limit  # bench/bench_wall_time.py: 0%, 0% and about 0.3%


# ---------------------------------------------------------------- records and reports
def test_old_records_load_and_save_back_byte_for_byte() -> None:
    record = RunRecord(group="baseline", seed=42, val_loss=2.0, wall_time=1.5, setup_key="k")
    text = record.to_json()
    assert "cpu_time" not in text and RunRecord.from_json(text).to_json() == text
    measured = RunRecord(group="baseline", seed=42, val_loss=2.0, wall_time=1.5, setup_key="k", cpu_time=1.2,
                         tokens_per_second=1000.0)
    assert RunRecord.from_json(measured.to_json()) == measured
    bad = json.loads(measured.to_json()) | {"cpu_time": -1}
    with pytest.raises(ValueError):
        RunRecord.from_json(json.dumps(bad))


def stored_records(project: Project) -> list[dict[str, object]]:
    runs = project.research / ".exprun" / "runs"
    return [json.loads(p.read_text()) for p in sorted(runs.rglob("seed*.json"))]


def test_each_run_records_its_cpu_time_and_throughput(project: Project) -> None:
    project.plan(WINNER)
    project.run("--experiment=use_x")
    records = stored_records(project)
    assert len(records) == 8
    for record in records:
        assert isinstance(record["cpu_time"], float) and 0 < record["cpu_time"] < 60
        assert record["tokens_per_second"] == pytest.approx(1_000_000 / record["wall_time"])
    text = (project.research / "experiment_use_x_1M.md").read_text()
    assert "| CPU time (s), mean ± std |" in text and "| throughput (tokens/s), min to max |" in text
    assert "Welch's t on log wall time" in text
    # Wall time's only verdict is its test's: no σ label, no effect-size label, in any row.
    assert "| wall_time (s) |" not in text.split("## Statistical Test")[1].split("## Wall Clock")[0]


def test_junit_has_the_measurements_of_runs_reused_from_the_store(project: Project) -> None:
    project.plan(WINNER)
    project.run("--experiment=use_x")
    project.run("--experiment=use_x", "--junitxml=out.xml")
    assert len(project.calls()) == 8  # the second session ran nothing
    xml = (project.path / "out.xml").read_text()
    for name in ("val_loss", "wall_time", "cpu_time", "tokens_per_second"):
        assert xml.count(f'<property name="{name}"') == 8, name
    assert '<property name="val_loss" value="1.910000"' in xml


def test_a_loaded_machine_is_named_in_the_report_and_the_terminal(project: Project) -> None:
    # Seed 256's run sleeps 3x as long as the others: the load another job would cause.
    project.plan(WINNER, behaviour={"--use_x 256": "slow"}, sleep=0.2)
    result = project.run("--experiment=use_x")
    result.stdout.fnmatch_lines(["*use_x: WINNER*", "  use_x: the wall-clock comparison cannot be trusted: the "
                                 "machine looks loaded (*use_x[[]seed256] ran at 0.*x its group's median throughput*"])
    text = (project.research / "experiment_use_x_1M.md").read_text()
    assert "**Not to be trusted: the machine looks loaded (" in text and "use_x[seed256] ran at 0." in text


def test_measured_with_shows_the_argv_the_trainer_received(project: Project) -> None:
    project.pytester.makeini("[pytest]\nexprun_command = python fake_trainer.py\n"
                             "exprun_argv = --seed {seed} --train_tokens {train_tokens} --output_dir {output_dir}\n")
    project.plan({"--note a<b": {"42": 1.90, "137": 1.91, "256": 1.89}})
    project.run("--experiment=--note 'a<b'")
    report = next(project.research.glob("experiment_note*_1M.md")).read_text()
    measured = report.split("## Measured With")[1]
    call = next(c for c in project.calls() if c["flags"] == ["--note", "a<b"] and c["seed"] == 42)
    assert "--seed S" not in measured and "DIR" not in measured and "&lt;" not in measured
    assert "- Trainer command: `python fake_trainer.py`; trainer I/O settings `argv: --seed '{seed}'" in measured
    shown = next(line for line in measured.splitlines() if line.startswith("- argv note"))
    assert shown.endswith(f"--seed 42 --train_tokens 1000000 --output_dir {call['output_dir']} --note 'a<b'`")
    baseline = (project.research / "baseline_variance_1M.md").read_text().split("## Measured With")[1]
    assert "- argv baseline[seed42] received: `" in baseline and "--seed S" not in baseline


# ------------------------------------------------------------------ the exact command
def test_after_k_the_closing_summary_gives_the_command_that_measures_the_missing_seeds(project: Project) -> None:
    project.plan(WINNER)
    result = project.run("--experiment=--use_x", "--experiment=--note 'a b'", "-k", "not seed256")
    line = next(line for line in result.stdout.lines if "3 of them deselected" in line)
    command = line.split("(stored runs are reused): ")[1]
    assert command.startswith("pytest ") and " -k " in command and "not seed256" not in command
    assert "'--experiment=--note '\"'\"'a b'\"'\"''" in command  # shell-quoted as the shell gave it
    args = shlex.split(command)[1:]
    before = len(project.calls())
    project.run(*args)
    measured = [(c["flags"], c["seed"]) for c in project.calls()[before:]]
    # seed 256 of each group, and the NEUTRAL experiment's extension seeds, which -k had left out too
    assert sorted(measured) == sorted([([], 256), (["--use_x"], 256), (["--note", "a b"], 256),
                                       (["--note", "a b"], 512), (["--note", "a b"], 1024)])
    assert (project.research / "experiment_use_x_1M.md").exists()
    assert "not measured" not in project.run(*args).stdout.str()


def test_after_a_failed_seed_the_closing_summary_gives_the_same_command_to_run_it(project: Project) -> None:
    project.plan(WINNER, behaviour={"--use_x 137": "exit3"})
    result = project.run("--experiment=use_x", "-k", "seed")
    result.stdout.fnmatch_lines(["1 seed not measured (use_x[[]seed137]); to run it (stored runs are reused): "
                                 "pytest * --experiment=use_x -k seed *"])


def test_a_baseline_measured_on_a_loaded_machine_says_so(project: Project) -> None:
    project.plan(behaviour={"137": "slow"}, sleep=0.2)
    project.run("-m", "baseline")
    text = (project.research / "baseline_variance_1M.md").read_text()
    section = text.split("## Wall Clock")[1].split("## Measured With")[0]
    assert "CPU time of the trainer's process tree:" in section and "tokens/s." in section
    assert "**The machine looked loaded while this baseline ran (seed 137 ran at 0." in section


# ------------------------------------------- groups measured under different load
def timed(times: list[float], usage: float) -> list[Timing]:
    return [Timing(i, t, t * usage) for i, t in enumerate(times)]


def test_groups_measured_under_different_load_are_not_compared_as_if_on_one_machine() -> None:
    """A baseline reused from a busy session against a quiet one: no run stands out in its group."""
    busy_baseline = timed([16.1, 16.4, 16.8, 15.9, 16.5], usage=0.55)
    quiet_experiment = timed([2.2, 2.1, 2.1, 2.2, 2.1], usage=1.9)
    found = wall_time.compare(busy_baseline, quiet_experiment, names=("baseline", "use_x"))
    assert found.loaded == () and found.significant
    assert not found.trusted
    assert found.unequal is not None and "baseline's runs got 0.29x" in found.unequal
    assert "not to be trusted: the two groups ran under different load" in found.headline()
    assert found.distrust() is not None and found.distrust().endswith("measure wall time again on a quiet machine")


def test_a_change_that_slows_every_step_keeps_its_cpu_use_and_is_trusted() -> None:
    found = wall_time.compare(timed([230.0, 232.0, 228.0, 231.0, 229.0], usage=1.95),
                              timed([256.0, 258.0, 255.0], usage=1.93))
    assert found.unequal is None and found.trusted and found.significant


def test_without_every_runs_cpu_time_the_groups_are_not_judged() -> None:
    base = timed([16.1, 16.4, 16.8], usage=0.5)
    exp = [Timing(0, 2.2, 4.0), Timing(1, 2.1, None), Timing(2, 2.1, 4.0)]
    assert wall_time.unequal_load(("baseline", "x"), base, exp) is None


def test_a_trainer_that_mostly_waits_is_not_judged_by_its_cpu_use() -> None:
    waiting = timed([10.0, 10.1, 9.9], usage=0.04), timed([10.0, 10.2, 10.1], usage=0.12)
    assert wall_time.unequal_load(("baseline", "x"), *waiting) is None
