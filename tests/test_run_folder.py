"""Damaged checkpoints and re-runs (issue 16, items 1-5): resume falls back to the newest checkpoint that loads,
predict/evaluate name the damaged file in one line, a run folder holds one run, logs restart at the checkpoint, and
stale writes are cleaned up. Nothing that could not be read is ever deleted."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from medvl.cli import main
from medvl.config.experiment import load_experiment
from medvl.train.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, prune_checkpoints
from medvl.train.loop import Trainer, train
from medvl.train.run_folder import RunFolderError, clean_stale_writes, prepare_run_folder

from .conftest import tiny_overrides

RUN = ("train.max_steps=4", "train.save_every=2", "train.eval_every=4", "train.log_every=1", "train.keep_checkpoints=5")


def _damage(file: Path, how: str) -> None:
    data = file.read_bytes()
    if how == "truncated":
        file.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        file.write_bytes(b"")
    elif how == "bad_header":
        file.write_bytes(data[:8] + b"{not json" + data[17:])
    elif how == "pickle":  # a pickle renamed .safetensors: refused, never unpickled
        file.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))


@pytest.fixture(scope="module")
def finished_run(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 4-step run with resumable checkpoints at steps 2 and 4 (+ last, best) and an EMA."""
    run = tmp_path_factory.mktemp("finished") / "run"
    train(load_experiment("quickstart", tiny_overrides(synth_root, run, *RUN, "train.ema_decay=0.9")))
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "run"
    shutil.copytree(run, dest)
    return dest


def _cfg(synth_root: Path, run: Path, *extra: str):  # noqa: ANN202
    return load_experiment("quickstart", tiny_overrides(synth_root, run, *RUN, "train.ema_decay=0.9", *extra))


# ----------------------------------------------------------------------------------------------------- item 1
@pytest.mark.parametrize("name", ["model", "ema", "train_state"])
@pytest.mark.parametrize("how", ["truncated", "empty", "bad_header", "pickle"])
def test_resume_skips_a_damaged_checkpoint_and_names_why(
    finished_run: Path, tmp_path: Path, name: str, how: str
) -> None:
    run = _copy(finished_run, tmp_path)
    for newest in ("last", "step_0000004"):
        _damage(run / "checkpoints" / newest / f"{name}.safetensors", how)
    found, damaged = latest_checkpoint(run)
    assert found == run / "checkpoints" / "step_0000002"
    assert set(damaged) == {run / "checkpoints" / "last", run / "checkpoints" / "step_0000004"}
    why = damaged[run / "checkpoints" / "last"]
    assert f"{name}.safetensors" in why and "\n" not in why
    assert {"truncated": "is truncated", "empty": "is empty", "bad_header": "is damaged", "pickle": "not safetensors"}[
        how
    ] in why
    with pytest.raises(CheckpointError, match=f"{name}.safetensors"):
        load_checkpoint(run / "checkpoints" / "last")


def test_resume_auto_falls_back_to_the_newest_complete_checkpoint(
    finished_run: Path, synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(finished_run, tmp_path)
    _damage(run / "checkpoints" / "last" / "model.safetensors", "truncated")
    _damage(run / "checkpoints" / "step_0000004" / "train_state.safetensors", "empty")
    summary = train(_cfg(synth_root, run), resume="auto")
    out = capsys.readouterr().out
    assert "skipped checkpoint step_0000004: " in out and "train_state.safetensors is empty" in out
    assert "resumed from" in out and "step_0000002" in out
    assert summary["steps"] == 4 and summary["steps_this_run"] == 2
    # the damaged ones are kept aside, not overwritten or deleted by the resumed run
    assert (run / "checkpoints" / "step_0000004.damaged" / "train_state.safetensors").stat().st_size == 0
    assert (run / "checkpoints" / "last.damaged" / "model.safetensors").is_file()
    assert load_checkpoint(run / "checkpoints" / "last").metadata["step"] == 4


@pytest.mark.parametrize("command", ["predict", "evaluate"])
@pytest.mark.parametrize("how", ["truncated", "pickle"])
def test_predict_and_evaluate_name_the_damaged_file_in_one_line(
    finished_run: Path, synth_root: Path, tmp_path: Path, command: str, how: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(finished_run, tmp_path)
    ckpt = run / "checkpoints" / "last"
    _damage(ckpt / "ema.safetensors", how)
    image = next((synth_root / "images").rglob("0.png"))
    args = [str(image)] if command == "predict" else ["--no-meteor", "--bootstrap", "0", "--no-html"]
    assert main([command, str(ckpt), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medvl: error: checkpoint file ") and str(ckpt / "ema.safetensors") in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_encoder_weights_that_are_not_weights_are_one_clear_error(tmp_path: Path) -> None:
    from medvl.models.encoders import load_state_dict_file

    text = tmp_path / "notes.pth"
    text.write_text("these are not weights")
    arbitrary = tmp_path / "object.pt"
    arbitrary.write_bytes(pickle.dumps(Path("x")))  # a pickle of a non-tensor class: weights_only refuses it
    renamed = tmp_path / "renamed.safetensors"
    torch.save({"w": torch.zeros(2)}, renamed)
    for path in (text, arbitrary):
        with pytest.raises(ValueError, match="is not a weights file") as err:
            load_state_dict_file(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="model.encoder_weights .*renamed.safetensors is a pickle"):
        load_state_dict_file(renamed)


# ----------------------------------------------------------------------------------------------------- item 2
def test_unreadable_checkpoints_are_never_deleted_nor_silently_started_over(
    finished_run: Path, synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(finished_run, tmp_path)
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    for ckpt in (run / "checkpoints").iterdir():
        (ckpt / "meta.json").write_text("{damaged")
    argv = ["train", "quickstart", *tiny_overrides(synth_root, run, *RUN, "train.ema_decay=0.9")]
    assert main([*argv, "--resume", "auto"]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint in" in err and "loads" in err and "--resume never" in err and err.count("\n") == 1
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == names  # all still there

    prune_checkpoints(run, keep=1)  # pruning never deletes what it could not read
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == names

    assert main([*argv, "--resume", "never"]) == 0
    kept = run / "previous_run_1" / "checkpoints"
    assert sorted(p.name for p in kept.iterdir()) == names
    assert (kept / "step_0000004" / "meta.json").read_text() == "{damaged"
    assert load_checkpoint(run / "checkpoints" / "last").metadata["step"] == 4


# ----------------------------------------------------------------------------------------------------- item 3
def test_a_used_run_folder_is_refused_with_the_way_out(
    finished_run: Path, synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(finished_run, tmp_path)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    argv = ["train", "quickstart", *tiny_overrides(synth_root, run, *RUN, "train.ema_decay=0.9")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume auto" in err and "--overwrite" in err
    assert "train.output_dir" in err and err.count("\n") == 1
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before  # nothing touched

    # resuming with an incompatible config says what differs
    assert main([*argv, "train.lr=0.123", "model.dropout=0.3", "--resume", "auto"]) == 2
    err = capsys.readouterr().err
    assert "config differs" in err and "train.lr: checkpoint 0.001, now 0.123" in err and "model.dropout" in err
    assert main([*argv, "--resume", "auto", "--overwrite"]) == 2
    assert "give one of them" in capsys.readouterr().err

    # --overwrite starts over: a 2-step recipe ends at step 2, with no checkpoint of the earlier run left
    short = [a if a != "train.max_steps=4" else "train.max_steps=2" for a in argv]
    assert main([*short, "--overwrite"]) == 0
    assert "done: 2 steps" in capsys.readouterr().out
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best", "last", "step_0000002"]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 2


def test_a_compatible_resume_may_change_the_length_and_where_things_go(
    finished_run: Path, synth_root: Path, tmp_path: Path
) -> None:
    run = _copy(finished_run, tmp_path)
    cfg = _cfg(synth_root, run, "train.max_steps=6", "train.num_threads=1", "data.num_workers=0")
    assert prepare_run_folder(run, "auto", cfg.to_dict()) == run / "checkpoints" / "last"
    with pytest.raises(RunFolderError, match="already holds a run"):
        prepare_run_folder(run, None, cfg.to_dict())
    assert prepare_run_folder(tmp_path / "new", None, cfg.to_dict()) is None  # a new folder is fine


# ----------------------------------------------------------------------------------------------------- item 4
class _Killed(Exception):
    pass


def test_metrics_log_restarts_at_the_checkpoint_on_resume(
    synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = ("train.max_steps=6", "train.save_every=2", "train.eval_every=6", "train.log_every=1")
    full = tmp_path / "full"
    train(load_experiment("quickstart", tiny_overrides(synth_root, full, *extra)))
    run = tmp_path / "run"
    original = Trainer._optimizer_step

    def die_at_step_4(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if self.state.step == 3:  # steps 1-3 logged, the last checkpoint is step 2
            raise _Killed
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_optimizer_step", die_at_step_4)
    with pytest.raises(_Killed):
        train(load_experiment("quickstart", tiny_overrides(synth_root, run, *extra)))
    monkeypatch.setattr(Trainer, "_optimizer_step", original)
    logged = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3]
    train(load_experiment("quickstart", tiny_overrides(synth_root, run, *extra)), resume="auto")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], sorted(k for k in r if k != "time")) for r in rows] == [
        (r["step"], sorted(k for k in r if k != "time")) for r in expected
    ]


def test_tensorboard_purges_events_after_the_resumed_step(tmp_path: Path) -> None:
    from medvl.train.loggers import build_loggers

    first = build_loggers(["tensorboard"], tmp_path)
    for step in (1, 2, 3):
        first.log({"train/loss": float(step)}, step)
    first.close()
    again = build_loggers(["tensorboard"], tmp_path, start_step=2)
    again.log({"train/loss": 30.0}, 3)
    again.close()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(1, 1.0), (2, 2.0), (3, 30.0)]


# ----------------------------------------------------------------------------------------------------- item 5
def test_stale_checkpoint_writes_are_cleaned_on_the_next_start(
    finished_run: Path, synth_root: Path, tmp_path: Path
) -> None:
    run = _copy(finished_run, tmp_path)
    ckpts = run / "checkpoints"
    (ckpts / ".tmp-step_0000006-4242").mkdir()  # a kill during a write
    (ckpts / ".tmp-step_0000006-4242" / "model.safetensors").write_bytes(b"half")
    shutil.copytree(ckpts / "last", ckpts / ".old-last-4242")  # a kill after the new one was renamed into place
    os_replace_missing = ckpts / "step_0000002"
    shutil.move(os_replace_missing, ckpts / ".old-step_0000002-4243")  # a kill between the two renames
    clean_stale_writes(run, say=lambda _m: None)
    assert sorted(p.name for p in ckpts.iterdir()) == ["best", "last", "step_0000002", "step_0000004"]
    assert load_checkpoint(ckpts / "step_0000002").metadata["step"] == 2

    (ckpts / ".tmp-step_0000008-99").mkdir()
    train(_cfg(synth_root, run, "train.max_steps=6"), resume="auto")  # the start of a run cleans up too
    assert not [p for p in ckpts.iterdir() if p.name.startswith(".")]


def test_train_with_encoder_weights_that_are_not_weights_is_one_line(
    synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "resnet18.pth"
    notes.write_text("not weights")
    renamed = tmp_path / "resnet18.safetensors"
    renamed.write_bytes(pickle.dumps({"conv1.weight": [0.0]}))
    for path in (notes, renamed):
        argv = [
            "train",
            "quickstart",
            *tiny_overrides(
                synth_root,
                tmp_path / path.suffix[1:],
                "train.max_steps=1",
                "model.encoder=torchvision",
                "model.encoder_name=resnet18",
                f"model.encoder_weights={path}",
            ),
        ]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("medvl: error: model.encoder_weights") and str(path) in err and err.count("\n") == 1
