"""The task-agnostic runner changed nothing that report generation computes: tiny quickstart and XrayGPT runs on the
session's synthetic set give the per-step training losses and validation metrics that the runner before the task
contract gave (recorded from commit d1c42d1 with the same settings, one CPU thread). Those runs drew their dropout
masks with `nn.Dropout`; medvl's CPU dropout (`medvl.models.dropout`) draws different masks from the same generator,
so the test puts `nn.Dropout`'s masks back: what it checks is the runner, not the masks."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from medvl.config.experiment import load_experiment
from medvl.models.dropout import Dropout
from medvl.train.loop import train

from .conftest import tiny_overrides

BEFORE = {
    "quickstart": {
        "train_loss": [
            5.6942759,
            5.6613703,
            5.6134734,
            5.5823832,
            5.5373783,
            5.5056367,
            5.489768,
            5.4809051,
            5.4634709,
            5.4393458,
        ],
        "val": {"loss": 5.473930358886719, "ce_14_micro_f1": 0.3333333333333333, "gt_micro_f1": 0.0},
    },
    "xraygpt_tiny_synthetic": {
        "train_loss": [
            5.7144074,
            5.7259154,
            5.7080073,
            5.729126,
            5.7131224,
            5.725194,
            5.7074509,
            5.7160182,
            5.7201266,
            5.7035851,
        ],
        "val": {"loss": 5.720146179199219, "ce_14_micro_f1": 0.3333333333333333, "gt_micro_f1": 0.0},
    },
}


# The xraygpt losses were recorded with the Q-Former bridge (the recipe has since moved to the MLP bridge).
XRAYGPT_TINY = ["model.size=tiny", "model.bridge=qformer"]


@pytest.mark.parametrize(("recipe", "extra"), [("quickstart", []), ("xraygpt_tiny_synthetic", XRAYGPT_TINY)])
def test_report_runs_match_the_runner_before_the_task_contract(
    recipe: str, extra: list[str], synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    monkeypatch.setattr(Dropout, "forward", nn.Dropout.forward)

    cfg = load_experiment(
        recipe,
        tiny_overrides(
            synth_root,
            tmp_path,
            "train.max_steps=10",
            "train.eval_every=5",
            "train.log_every=1",
            "train.select_metric=loss",
            "train.select_mode=min",
            *extra,
        ),
    )
    summary = train(cfg)
    logs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [row["train/loss"] for row in logs if "train/loss" in row]
    expected = BEFORE[recipe]
    assert losses == pytest.approx(expected["train_loss"], rel=1e-5, abs=1e-6)
    for key, value in expected["val"].items():
        assert summary["final_val_metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
