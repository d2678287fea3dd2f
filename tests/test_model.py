"""The typed model and the store's typed methods: files written before the model still load, and
what is loaded is written back byte for byte."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_exprun.model import DecisionMode, Kind, RunRecord, Verdict
from pytest_exprun.store import RunStore, StoreWarning

DATA = Path(__file__).with_name("data") / "store_v1"


def _store_with(tmp_path: Path, kind: Kind, name: str, sample: str) -> RunStore:
    folder = tmp_path / "results" / "1M" / kind.value
    folder.mkdir(parents=True)
    shutil.copy(DATA / sample, folder / f"{name}.json")
    return RunStore(tmp_path, "1M")


@pytest.mark.parametrize(("sample", "name", "mode", "verdict"), [
    ("fixed_decision.json", "use_neu", DecisionMode.FIXED, Verdict.NEUTRAL),
    ("sequential_decision.json", "use_y", DecisionMode.SEQUENTIAL, Verdict.WINNER),
])
def test_a_decision_stored_before_the_model_loads_and_is_saved_back_unchanged(
        tmp_path: Path, sample: str, name: str, mode: DecisionMode, verdict: Verdict) -> None:
    store = _store_with(tmp_path, Kind.DECISION, name, sample)
    decision = store.decision(name)
    assert decision is not None and decision.mode is mode and decision.verdict is verdict
    assert decision.setup.key() == decision.setup_key and decision.baseline_setup.key() == decision.baseline_key
    path = tmp_path / "results" / "1M" / "experiment" / f"{name}.json"
    before = path.read_bytes()
    path.unlink()
    store.save_decision(decision)
    assert path.read_bytes() == before
    assert [d.name for d in store.decisions()] == [name]


def test_a_snapshot_stored_before_the_model_loads_and_is_saved_back_unchanged(tmp_path: Path) -> None:
    store = _store_with(tmp_path, Kind.SNAPSHOT, "baseline", "snapshot.json")
    snapshot = store.snapshot()
    assert snapshot is not None and snapshot.seeds == (42, 137, 256, 512, 1024)
    path = tmp_path / "results" / "1M" / "baseline" / "baseline.json"
    before = path.read_bytes()
    store.save_snapshot(snapshot)
    assert path.read_bytes() == before


def test_a_damaged_decision_is_set_aside_with_a_warning(tmp_path: Path) -> None:
    store = _store_with(tmp_path, Kind.DECISION, "use_neu", "fixed_decision.json")
    path = tmp_path / "results" / "1M" / "experiment" / "use_neu.json"
    path.write_text(path.read_text().replace('"NEUTRAL"', '"MAYBE"'))
    with pytest.warns(StoreWarning, match="not a valid exprun result"):
        assert store.decision("use_neu") is None
    assert not path.exists() and list(path.parent.glob("use_neu.json.corrupt-*"))


def test_a_decision_without_a_verdict_is_never_stored(tmp_path: Path) -> None:
    store = _store_with(tmp_path, Kind.DECISION, "use_neu", "fixed_decision.json")
    decision = store.decision("use_neu")
    assert decision is not None
    from dataclasses import replace

    with pytest.raises(ValueError, match="no verdict to store"):
        store.save_decision(replace(decision, verdict=None, problem="seed 42 missing"))


def test_a_run_record_round_trips_and_is_frozen(tmp_path: Path) -> None:
    record = RunRecord("baseline", 42, 2.0, 1.5, "abc", curve=[(10, 2.5)], extra={"environment": {"device": "cpu"}})
    store = RunStore(tmp_path, "1M")
    store.save_record(record)
    assert store.record("baseline", "abc", 42) == record
    assert record.environment.get("device") == "cpu"
    with pytest.raises(AttributeError):
        record.seed = 1  # type: ignore[misc]


def test_the_decision_rule_takes_its_time_from_a_stored_decision_of_the_same_facts(tmp_path: Path) -> None:
    store = _store_with(tmp_path, Kind.DECISION, "use_neu", "fixed_decision.json")
    stored = store.decision("use_neu")
    assert stored is not None
    fresh = stored.stamped("another commit", "another time")
    assert fresh.same_facts(stored) and fresh != stored
    from dataclasses import replace

    assert not replace(fresh, verdict=Verdict.WINNER).same_facts(stored)


def test_an_untraced_record_and_snapshot_are_written_without_a_traced_field(tmp_path: Path) -> None:
    store = RunStore(tmp_path, "1M")
    path = store.save_record(RunRecord("baseline", 42, 2.0, 1.5, "abc"))
    assert '"traced"' not in path.read_text()
    snapshot = _store_with(tmp_path / "s", Kind.SNAPSHOT, "baseline", "snapshot.json").snapshot()
    assert snapshot is not None and snapshot.traced is None and "traced" not in snapshot.to_json()


def test_what_a_run_read_round_trips_in_its_record_and_the_snapshot(tmp_path: Path) -> None:
    traced = {"files": {"conf/run.json": [12, 1_700_000_000_000_000_000, "ab" * 32]}, "dirs": {}, "packages": {},
              "sites": [], "notes": [], "grouped": {"code": [], "config": ["conf/run.json"], "data": [],
                                                    "packages": []}}
    store = RunStore(tmp_path, "1M")
    record = RunRecord("baseline", 42, 2.0, 1.5, "abc", traced=traced)
    store.save_record(record)
    assert store.record("baseline", "abc", 42) == record
    old = _store_with(tmp_path / "s", Kind.SNAPSHOT, "baseline", "snapshot.json").snapshot()
    assert old is not None
    store.save_snapshot(replace(old, traced=traced))
    again = store.snapshot()
    assert again is not None and again.traced == traced and again.setup == old.setup


def test_a_record_whose_traced_field_is_not_an_object_is_set_aside(tmp_path: Path) -> None:
    store = RunStore(tmp_path, "1M")
    path = store.save_record(RunRecord("baseline", 42, 2.0, 1.5, "abc"))
    path.write_text(path.read_text().replace('"version"', '"traced": 7, "version"'))
    with pytest.warns(StoreWarning, match="not a valid run record"):
        assert store.record("baseline", "abc", 42) is None
