"""`medvl evaluate` starts METEOR before the model generates, so its JVM loads during inference (not after it)."""

from __future__ import annotations

from pathlib import Path

import pytest

import medvl.evaluate.meteor as meteor_module
import medvl.evaluate.run as run_module
from medvl.evaluate.ptb import java_missing_reason
from medvl.evaluate.reports import ScoringOptions
from medvl.evaluate.run import evaluate


def test_meteor_starts_before_generation_and_serves_both_scorings(
    trained_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if java_missing_reason():
        pytest.skip(f"METEOR needs Java: {java_missing_reason()}")
    events: list[str] = []
    started: list[meteor_module.MeteorScorer] = []

    class RecordingScorer(meteor_module.MeteorScorer):
        def __init__(self) -> None:
            super().__init__()
            events.append("meteor started")
            started.append(self)

    real_outputs = run_module._outputs

    def recording_outputs(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        events.append("generation")
        return real_outputs(*args, **kwargs)

    monkeypatch.setattr(meteor_module, "MeteorScorer", RecordingScorer)
    monkeypatch.setattr(run_module, "_outputs", recording_outputs)
    options = ScoringOptions(bootstrap=0, html=False)
    result = evaluate(trained_checkpoint, split="test", out_dir=tmp_path / "eval", progress=False, options=options)

    assert events[0] == "meteor started" and "generation" in events
    # One process scored the model's reports and the majority-report baseline; it is closed afterwards.
    assert events.count("meteor started") == 1
    assert started[0]._proc.poll() is not None
    assert result["meteor"] is not None and 0.0 <= result["meteor"] <= 1.0


def test_a_warmed_up_meteor_that_no_scoring_took_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[bool] = []

    class FakeScorer:
        def close(self) -> None:
            closed.append(True)

    monkeypatch.setattr("medvl.evaluate.reports._meteor_handle", lambda options: FakeScorer())
    options = ScoringOptions()
    options.warm_up()
    options.warm_up()  # a second call keeps the first process
    options.close()
    options.close()
    assert closed == [True]
    taken = ScoringOptions()
    taken.warm_up()
    first = taken.take_meteor()
    assert isinstance(first, FakeScorer) and taken._warm_meteor is None
    taken.close()  # the caller owns what it took
    assert closed == [True]
