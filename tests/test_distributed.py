"""Multi-process training: the global batch, sharded evaluation, and proof that 2 processes (DDP and FSDP, gloo on
CPU) compute what 1 process computes, including checkpoints resumed across world sizes."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import weakref
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from medvl.config.experiment import load_experiment
from medvl.train.checkpoint import load_checkpoint
from medvl.train.distributed import (
    DistInfo,
    DistributedSetupError,
    GlobalBatches,
    init_distributed,
    is_main_process,
    merge_shards,
    plan_batches,
    resolve_backend,
    shard_indices,
    shutdown,
)
from medvl.train.loop import Trainer, train
from medvl.train.parallel import resolve_strategy

from .conftest import REPO, tiny_overrides

# dropout 0: with dropout, runs on different world sizes draw different masks and agree only in distribution.
# The ViT encoder has no BatchNorm: BatchNorm running statistics are per rank under data parallelism (each rank sees
# its own micro-batches), so a BatchNorm model matches in its parameters and loss curve but not in those buffers.
# model.max_len=160: the tiny preset's 64 cuts every synthetic report, so no batch would have padding and the decoder's
# packed teacher forcing (which FSDP must gather parameters for, like the padded path) would go untested here.
RUN = [
    "model.encoder=vit",
    "model.max_len=160",
    "model.dropout=0",
    "data.batch_size=4",
    "train.global_batch_size=8",
    "train.max_steps=6",
    "train.eval_every=3",
    "train.log_every=1",
    "train.warmup_steps=2",
    "train.lr=3e-3",
    "train.eval_max_studies=5",
]


# ------------------------------------------------------------------------------------------------ pure functions
def test_plan_batches_holds_the_global_batch() -> None:
    assert plan_batches(4, 1, 16, 2).grad_accum == 2 and plan_batches(4, 1, 16, 1).grad_accum == 4
    assert plan_batches(4, 3, 0, 2).global_batch == 24  # no global batch: micro x accum x world
    with pytest.raises(DistributedSetupError, match="global_batch_size=10 is not a multiple of .* 4 x 2"):
        plan_batches(4, 1, 10, 2)
    with pytest.raises(
        DistributedSetupError, match=r"no data.batch_size fits on 2 process\(es\): .* multiple of 2 \(e.g. 8\)"
    ):
        plan_batches(4, 1, 7, 2)  # 7 studies cannot be split over 2 processes at any micro-batch
    with pytest.raises(DistributedSetupError, match="contradicts"):
        plan_batches(4, 3, 16, 2)


@pytest.mark.parametrize("world", [1, 2, 4])
def test_every_step_sees_the_same_global_batch_on_any_world_size(world: int) -> None:
    one = GlobalBatches(37, plan_batches(2, 1, 8, 1), epoch=3, seed=5, rank=0)
    ranks = [GlobalBatches(37, plan_batches(2, 1, 8, world), epoch=3, seed=5, rank=r) for r in range(world)]
    assert one.steps == ranks[0].steps == 4
    for step in range(one.steps):
        together = [i for r in ranks for mb in r.micro_batches(step) for i in mb]
        alone = [i for mb in one.micro_batches(step) for i in mb]
        assert together == alone and len(set(alone)) == 8  # the same studies, in the same order, none twice


def _steps(batches: GlobalBatches) -> list[list[int]]:
    return [[i for mb in batches.micro_batches(step) for i in mb] for step in range(batches.steps)]


@pytest.mark.parametrize("world", [1, 2])
def test_length_grouped_batches_are_homogeneous_and_cover_the_epoch_like_random_ones(world: int) -> None:
    n, plan = 1003, plan_batches(4, 1, 8, world)  # 125 global batches: two full groups of 50 and one of 25
    lengths = np.random.default_rng(0).integers(10, 200, n).tolist()
    grouped = [GlobalBatches(n, plan, 2, 7, r, lengths) for r in range(world)]
    steps = [[i for g in grouped for i in _steps(g)[s]] for s in range(grouped[0].steps)]
    assert grouped[0].steps == 125
    # The epoch keeps the same studies as without grouping (the same ones dropped), each once.
    plain = GlobalBatches(n, plan_batches(8, 1, 8, 1), 2, 7, 0)
    assert sorted(i for step in steps for i in step) == sorted(i for step in _steps(plain) for i in step)
    spread = np.mean([max(lengths[i] for i in s) - min(lengths[i] for i in s) for s in steps])
    plain_spread = np.mean([max(lengths[i] for i in s) - min(lengths[i] for i in s) for s in _steps(plain)])
    assert spread < 0.1 * plain_spread, (spread, plain_spread)
    # Batches are shuffled: the longest does not always come first, and another epoch differs.
    assert max(lengths[i] for i in steps[0]) < max(lengths)
    assert _steps(GlobalBatches(n, plan, 3, 7, 0, lengths)) != _steps(grouped[0])
    assert _steps(GlobalBatches(n, plan, 2, 7, 0, lengths)) == _steps(grouped[0])  # repeatable (resume)


def test_length_grouping_needs_one_length_per_item() -> None:
    with pytest.raises(ValueError, match="3 lengths for 4 items"):
        GlobalBatches(4, plan_batches(2, 1, 2, 1), 0, 0, 0, [1, 2, 3])


@pytest.mark.parametrize(("n", "world"), [(0, 2), (7, 1), (7, 2), (7, 3), (10, 4), (3, 5)])
def test_sharded_evaluation_returns_every_item_exactly_once(n: int, world: int) -> None:
    parts = [[(i, f"study-{i}") for i in shard_indices(n, r, world)] for r in range(world)]
    assert sum(len(p) for p in parts) == n and max(map(len, parts)) - min(map(len, parts)) <= 1
    assert merge_shards(parts, n) == [f"study-{i}" for i in range(n)]
    if n:
        with pytest.raises(RuntimeError, match="produced by two ranks"):
            merge_shards([*parts, parts[0][:1] or [(0, "x")]], n)
        with pytest.raises(RuntimeError, match="lost 1 of"):
            merge_shards([p[1:] if i == 0 else p for i, p in enumerate(parts)], n)


@pytest.mark.parametrize(
    ("world", "rank", "main"),
    [(None, None, True), (None, "1", True), ("1", "1", True), ("2", "0", True), ("2", "1", False)],
)
def test_the_main_process_is_rank_0_only_under_torchrun(
    world: str | None, rank: str | None, main: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # RANK=1 without WORLD_SIZE > 1 is a single process (it trains and reports alone, as init_distributed decides).
    for name, value in (("WORLD_SIZE", world), ("RANK", rank)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert is_main_process() is main


def test_shutdown_frees_what_cycles_hold_before_destroying_the_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """A finished trainer's DDP wrapper (whose reducer holds the process group) lives in reference cycles; left to the
    interpreter's exit it freed gloo's work too late and the rank aborted. shutdown() must collect it first."""
    import torch.distributed as dist

    class Holder:  # stands in for the DDP-wrapped trainer: unreachable, alive only through its own cycle
        pass

    seen: list[str] = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "barrier", lambda: seen.append("barrier"))
    gc.disable()  # no automatic collection may free the holder: only shutdown's own
    try:
        holder = Holder()
        holder.cycle = holder  # type: ignore[attr-defined]
        alive = weakref.ref(holder)
        del holder
        monkeypatch.setattr(
            dist, "destroy_process_group", lambda: seen.append(f"destroy, holder alive: {alive() is not None}")
        )
        shutdown(sync=True)
    finally:
        gc.enable()
    assert seen == ["barrier", "destroy, holder alive: False"]


def test_shutdown_can_wait_and_keep_the_group_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """The quickstart trains, then evaluates on the same group: a second default group in one process could pair a
    rank with its peer's first one (a hang), so training only waits for every rank and leaves the group open."""
    import torch.distributed as dist

    seen: list[str] = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "barrier", lambda: seen.append("barrier"))
    monkeypatch.setattr(dist, "destroy_process_group", lambda: seen.append("destroy"))
    shutdown(sync=True, keep_open=True)
    assert seen == ["barrier"]


def test_wrong_settings_fail_before_any_work(monkeypatch: pytest.MonkeyPatch, synth_root: Path, tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        with pytest.raises(DistributedSetupError, match="nccl needs CUDA"):
            resolve_backend("nccl", "cpu")
        cfg = load_experiment("quickstart", tiny_overrides(synth_root, tmp_path / "nccl", "train.dist_backend=nccl"))
        with pytest.raises(DistributedSetupError, match="nccl needs CUDA"):
            Trainer(cfg)
        assert not (tmp_path / "nccl").exists()  # nothing was written
    with pytest.raises(DistributedSetupError, match="must be one of auto, gloo, nccl"):
        resolve_backend("mpi4", "cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(DistributedSetupError, match="MASTER_ADDR and MASTER_PORT not set: no rendezvous endpoint"):
        init_distributed("gloo", "cpu")
    monkeypatch.delenv("RANK")
    with pytest.raises(DistributedSetupError, match="RANK is not set"):
        init_distributed("gloo", "cpu")
    monkeypatch.delenv("WORLD_SIZE")
    cfg = load_experiment("quickstart", tiny_overrides(synth_root, tmp_path / "gb", "train.global_batch_size=6"))
    with pytest.raises(DistributedSetupError, match="not a multiple"):
        Trainer(cfg)
    with pytest.raises(DistributedSetupError, match="deepspeed is not supported"):
        resolve_strategy("deepspeed", DistInfo())
    assert resolve_strategy("fsdp", DistInfo()) == "none"  # a recipe asking for FSDP runs unchanged on one process


# ------------------------------------------------------------------------------------------------ 2 processes
def _launch(program: list[str], timeout: int = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`torchrun --standalone --nproc-per-node 2 PROGRAM` (`-m medvl ...` or a script), one thread per process;
    with `check`, a non-zero exit fails the test with both output tails."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *program]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:  # the whole tails, unabridged (an assertion's repr would be cut)
        pytest.fail(
            f"torchrun exited {done.returncode}\n--- stdout ---\n{done.stdout[-3000:]}\n--- stderr ---\n"
            f"{done.stderr[-6000:]}",
            pytrace=False,
        )
    return done


def _torchrun(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess[str]:
    """`medvl train quickstart ARGS` on 2 processes; a failure fails the test."""
    return _launch(["-m", "medvl", "train", "quickstart", *args], timeout)


def _curve(run: Path) -> list[float]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["train/loss"] for r in rows if "train/loss" in r]


def _val(run: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "val/loss" in r]


def _weights(run: Path, name: str = "last") -> dict[str, torch.Tensor]:
    checkpoint = load_checkpoint(run / "checkpoints" / name)
    assert checkpoint.metadata["config"]["model"]["dropout"] == 0.0
    raw = load_file(run / "checkpoints" / name / "model.safetensors")
    assert len(raw) < len(checkpoint.model_state)  # the tied output projection is stored once, also under FSDP
    return checkpoint.model_state


BATCHNORM_STATS = ("running_mean", "running_var", "num_batches_tracked")


def _without_key_bias(name: str, value: torch.Tensor) -> torch.Tensor:
    """The tensor with attention key biases zeroed: softmax ignores a constant added to every score, so a key bias's
    gradient is only rounding noise, which Adam scales up to lr-sized steps that differ with any change of kernel."""
    if name.endswith("qkv.bias"):  # [q | k | v]
        value = value.clone()
        value[value.numel() // 3 : 2 * value.numel() // 3] = 0
    elif name.endswith("kv.bias"):  # [k | v]
        value = value.clone()
        value[: value.numel() // 2] = 0
    return value


def _assert_same_weights(
    a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], tol: float = 2e-5, skip_batchnorm_stats: bool = False
) -> None:
    assert a.keys() == b.keys()
    keys = [k for k in a if not (skip_batchnorm_stats and k.endswith(BATCHNORM_STATS))]
    gaps = {
        k: float((_without_key_bias(k, a[k]).double() - _without_key_bias(k, b[k]).double()).abs().max()) for k in keys
    }
    worst = max(gaps, key=gaps.__getitem__)
    assert gaps[worst] < tol, (worst, gaps[worst])


@pytest.fixture(scope="module")
def single_runs(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One-process reference runs, per encoder, trained once for the module."""
    root, runs = tmp_path_factory.mktemp("dist"), {}

    def get(encoder: str) -> Path:
        if encoder not in runs:
            runs[encoder] = root / f"one_{encoder}"
            train(
                load_experiment(
                    "quickstart", tiny_overrides(synth_root, runs[encoder], *RUN, f"model.encoder={encoder}")
                )
            )
        return runs[encoder]

    return get  # type: ignore[return-value]


@pytest.fixture()
def one_process(single_runs) -> Path:  # noqa: ANN001
    return single_runs("vit")


@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "encoder"), [("ddp", "vit"), ("fsdp", "vit"), ("ddp", "conv"), ("fsdp", "conv")])
def test_two_processes_match_one(
    strategy: str,
    encoder: str,
    single_runs,
    synth_root: Path,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    reference = single_runs(encoder)
    run = tmp_path / strategy
    done = _torchrun(tiny_overrides(synth_root, run, *RUN, f"train.strategy={strategy}", f"model.encoder={encoder}"))
    assert done.stdout.count("done: 6 steps") == 1  # rank 0 reports, not every rank
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["strategy"] == strategy and summary["grad_accum"] == 1
    assert json.loads((reference / "train_summary.json").read_text())["grad_accum"] == 2  # same global batch of 8
    np.testing.assert_allclose(_curve(run), _curve(reference), rtol=1e-5, atol=1e-6)
    assert len(_curve(run)) == 6
    batchnorm = encoder == "conv"
    _assert_same_weights(_weights(run), _weights(reference), skip_batchnorm_stats=batchnorm)
    if batchnorm:
        return  # evaluation runs on the running statistics, which are per rank (see RUN)
    # Validation sharded over 2 ranks and merged: the same loss and the same scores as on one process.
    one_process = reference
    for two, one in zip(_val(run), _val(one_process), strict=True):
        assert two["step"] == one["step"]
        assert two["val/loss"] == pytest.approx(one["val/loss"], rel=1e-5)
        for key in ("val/bleu_4", "val/gt_micro_f1", "val/ce_14_micro_f1"):
            assert two[key] == pytest.approx(one[key], abs=1e-9), key
    # Only rank 0 wrote: one log line per step and validation, one set of checkpoints.
    assert len((run / "metrics.jsonl").read_text().splitlines()) == len(
        (one_process / "metrics.jsonl").read_text().splitlines()
    )


@pytest.mark.slow
def test_checkpoints_resume_across_world_sizes(one_process: Path, synth_root: Path, tmp_path: Path) -> None:
    # 1 process -> 2 processes: resume the single-process step-3 checkpoint under torchrun.
    two = tmp_path / "two_from_one"
    _torchrun(tiny_overrides(synth_root, two, *RUN) + ["--resume", str(one_process / "checkpoints" / "step_0000003")])
    _assert_same_weights(_weights(two), _weights(one_process))
    assert _curve(two) == pytest.approx(_curve(one_process)[3:], rel=1e-5)
    # 2 processes -> 1 process: resume the step-3 checkpoint the 2-process run wrote, in this process.
    one = tmp_path / "one_from_two"
    first_half = tmp_path / "two_first_half"
    _torchrun(tiny_overrides(synth_root, first_half, *RUN))
    train(
        load_experiment("quickstart", tiny_overrides(synth_root, one, *RUN)),
        resume=str(first_half / "checkpoints" / "step_0000003"),
    )
    _assert_same_weights(_weights(one), _weights(one_process))
    meta = json.loads((first_half / "checkpoints" / "step_0000003" / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["global_batch"] == 8 and meta["strategy"] == "ddp"


@pytest.mark.slow
def test_evaluate_sharded_over_two_processes_equals_one(one_process: Path, tmp_path: Path) -> None:
    from medvl.cli import main

    args = ["evaluate", str(one_process), "--split", "test", "--no-meteor", "--bootstrap", "50", "--no-html"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    done = _launch(["-m", "medvl", *args, "--out", str(tmp_path / "two")], check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("95% CI") == 1  # only rank 0 prints
    rows = {
        name: [json.loads(x) for x in (tmp_path / name / "predictions.jsonl").read_text().splitlines()]
        for name in ("one", "two")
    }
    assert [r["id"] for r in rows["two"]] == [r["id"] for r in rows["one"]]  # every study once, in order
    assert [r["generated"] for r in rows["two"]] == [r["generated"] for r in rows["one"]]
    one, two = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("one", "two"))
    for key in ("bleu_4", "rouge_l", "cider", "ce_14_micro_f1", "gt_micro_f1", "bleu_4_ci_low", "n_studies"):
        assert two[key] == one[key], key


FAIL_ON_RANK_1 = """
import os, sys
import medvl.evaluate.run as run

real_outputs = run._outputs


def outputs(*args, **kwargs):
    if os.environ["RANK"] == "1":
        raise RuntimeError("rank 1 fails while generating")
    return real_outputs(*args, **kwargs)


run._outputs = outputs
from medvl.cli import main

sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_evaluate_stops_when_one_rank_fails(one_process: Path, tmp_path: Path) -> None:
    """Rank 0 waits in the gather while rank 1 fails: rank 1 must not wait for it at a barrier (which hung until the
    process group's 30-minute timeout); the job ends at once, with rank 1's error."""
    script = tmp_path / "fail_on_rank_1.py"
    script.write_text(FAIL_ON_RANK_1)
    args = ["evaluate", str(one_process), "--split", "test", "--no-meteor", "--bootstrap", "20", "--no-html"]
    done = _launch([str(script), *args, "--out", str(tmp_path / "two")], timeout=120, check=False)
    assert done.returncode != 0
    assert "rank 1 fails while generating" in done.stderr
    assert not (tmp_path / "two" / "metrics.json").exists()


@pytest.mark.slow
def test_quickstart_runs_under_torchrun(synth_root: Path, tmp_path: Path) -> None:
    """Every rank trains and helps evaluate; rank 0 alone prints the results (the others crashed on its empty
    result before)."""
    run = tmp_path / "quickstart"
    overrides = [o for o in tiny_overrides(synth_root, run, *RUN) if not o.startswith("train.output_dir=")]
    done = _launch(["-m", "medvl", "quickstart", "--output-dir", str(run), *overrides], check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("clinical micro-F1") == 1
    assert (run / "eval_test" / "metrics.json").exists()


def test_a_rank_waiting_for_rank_0_reports_its_failure_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rank 0 failed while preparing (say, an empty data.root): the others, waiting at the barrier, say so in one
    line instead of gloo's traceback ("Connection closed by peer")."""
    import medvl.train.loop as loop

    def lost_peer(info: DistInfo) -> None:
        raise RuntimeError("[../gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:29500")

    monkeypatch.setattr(loop, "barrier", lost_peer)
    waiting = SimpleNamespace(main=False, dist=DistInfo(rank=1, world_size=2))
    with pytest.raises(DistributedSetupError, match="^rank 1: rank 0 stopped while preparing the run"):
        Trainer._main_first(waiting, lambda: "never reached")  # type: ignore[arg-type]


@pytest.mark.slow
def test_fsdp_trains_the_conv_encoder_in_bf16(synth_root: Path, tmp_path: Path) -> None:
    """FSDP's bf16 parameters met BatchNorm's fp32 running statistics on the first step ("expected scalar type
    BFloat16 but found Float"); BatchNorm now keeps fp32 parameters, as under autocast."""
    run = tmp_path / "fsdp_bf16"
    _torchrun(
        tiny_overrides(synth_root, run, *RUN, "train.strategy=fsdp", "model.encoder=conv", "train.precision=bf16")
    )
    curve = _curve(run)
    assert len(curve) == 6 and all(np.isfinite(curve)) and curve[-1] < curve[0]
