"""The `medvl` command end to end at a tiny size, and its answers to bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medvl.cli import main
from medvl.findings import FINDINGS

from .conftest import tiny_overrides


@pytest.fixture(scope="module")
def trained_run(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run")
    code = main(["train", "quickstart", *tiny_overrides(synth_root, run, "train.max_steps=16", "train.eval_every=8")])
    assert code == 0
    return run


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["data"],
        ["data", "synth"],
        ["train"],
        ["evaluate"],
        ["predict"],
        ["quickstart"],
        ["recipes"],
        ["serve"],
        ["demo"],
        ["export"],
    ],
)
def test_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    assert "usage: medvl" in capsys.readouterr().out


def test_recipes_lists_quickstart(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipes"]) == 0
    assert "quickstart" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["doctor", "--bogus"], ["data", "synth", "--out", "x", "--bogus"]])
def test_unknown_option_shows_the_commands_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    command = " ".join(a for a in argv if not a.startswith("-") and a != "x")
    assert f"usage: medvl {command} [-h]" in err
    assert f"medvl {command}: error: unrecognized arguments: --bogus" in err


def test_recipe_summary_is_a_whole_clause_of_a_multiline_comment() -> None:
    from medvl.cli.train import recipe_summary

    text = (
        "# BiomedGPT VQA on SLAKE (English questions; train.json + images/), a tiny model\n"
        "# from scratch on one CPU; answers constrained. More detail.\nmodel:\n  family: unified\n# not the header\n"
    )
    assert recipe_summary(text) == (
        "BiomedGPT VQA on SLAKE (English questions; train.json + images/), a tiny model from scratch on one CPU"
    )
    assert recipe_summary("# XrayGPT stage 1: MIMIC-CXR pairs. Then stage 2.\n") == "XrayGPT stage 1: MIMIC-CXR pairs."
    assert recipe_summary("data:\n  source: synthetic\n") == ""


def test_print_config_shows_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "train.lr=0.002", "--print-config"]) == 0
    assert "lr: 0.002" in capsys.readouterr().out


def test_data_synth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "synth"
    assert main(["data", "synth", "--out", str(out), "--n", "6", "--seed", "1", "--workers", "1"]) == 0
    ann = json.loads((out / "annotation.json").read_text())
    assert sum(len(v) for v in ann.values()) == 6
    assert "wrote 6 synthetic studies" in capsys.readouterr().out
    # stats on it without --source: not a prepared folder, and the error names the flag that reads it
    assert main(["data", "stats", str(out)]) == 2
    assert "no prepared.json); for a data set in its own layout name it with --source" in capsys.readouterr().err
    assert main(["data", "stats", str(out), "--source", "iu_xray", "--no-html"]) == 0
    assert f"6 usable studies in {out} (source iu_xray)" in capsys.readouterr().out


def test_evaluate_writes_metrics_and_predictions(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                str(trained_run),
                "--split",
                "test",
                "--out",
                str(out),
                "--num-beams",
                "2",
                "--bootstrap",
                "50",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "baseline" in printed and "gt_micro_f1" in printed and "ce_14_micro_f1" in printed
    assert "Cardiomegaly" in printed and "95% CI" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("bleu_1", "bleu_4", "meteor", "rouge_l", "ce_14_micro_f1", "ce_5_macro_f1", "gt_micro_f1"):
        for source in (metrics, metrics["baseline"]):
            assert source[key] is None or 0.0 <= source[key] <= 1.0 + 1e-9, key
        if metrics[key] is not None:
            assert metrics[f"{key}_ci_low"] <= metrics[key] + 1e-9 and metrics[key] <= metrics[f"{key}_ci_high"] + 1e-9
    assert (metrics["meteor"] is None) == ("meteor" in metrics["unavailable"])
    assert set(metrics["gt_per_finding"]) == set(FINDINGS) and len(metrics["per_finding"]) == 14
    assert metrics["n_studies"] == 4 and metrics["split"] == "test" and metrics["generation"]["num_beams"] == 2
    assert {"medvl", "pycocoevalcap", "java"} <= set(metrics["versions"]) and metrics["bootstrap"]["resamples"] == 50
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    assert {
        "id",
        "image_paths",
        "reference",
        "generated",
        "reference_labels",
        "generated_labels",
        "example_f1",
        "findings",
        "generated_findings",
    } <= set(rows[0])
    assert all(Path(p).is_file() for p in rows[0]["image_paths"])
    page = (out / "report.html").read_text()
    assert "ce_14_micro_f1" in page and "data:image/png;base64," in page and rows[0]["id"] in page


def test_predict_one_study_and_a_folder(
    trained_run: Path, synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = synth_root / "images" / json.loads((synth_root / "annotation.json").read_text())["test"][0]["id"]
    assert main(["predict", str(trained_run), str(study / "0.png"), str(study / "1.png")]) == 0
    assert capsys.readouterr().out.strip()

    folder = tmp_path / "incoming"
    (folder / "s1").mkdir(parents=True)
    for name in ("0.png", "1.png"):
        (folder / "s1" / name).write_bytes((study / name).read_bytes())
    (folder / "loose.png").write_bytes((study / "0.png").read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = tmp_path / "preds.jsonl"
    assert main(["predict", str(trained_run), str(folder), "--out", str(out)]) == 0
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {"s1", "loose", "broken"}
    assert "report" in rows["s1"] and len(rows["s1"]["images"]) == 2
    assert "cannot decode" in rows["broken"]["error"]
    assert "2 reports written, 1 studies failed" in capsys.readouterr().err

    (folder / "s1" / "2.png").write_bytes((study / "0.png").read_bytes())  # a third view: the model takes two
    out = tmp_path / "preds3.jsonl"
    assert (
        main(["predict", str(trained_run), *(str(folder / "s1" / f"{i}.png") for i in range(3)), "--out", str(out)])
        == 0
    )
    assert json.loads(out.read_text())["ignored_views"] == 1
    captured = capsys.readouterr()
    assert "1 of the 3 images were left out" in captured.err and "1 prediction written to" in captured.err
    assert captured.out == ""  # with --out the row goes to the file instead of standard output


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "train.lrr=0.1"], "Did you mean 'lr'"),
        (["train", "no_such_recipe"], "not found"),
        (["evaluate", "/no/such/checkpoint"], "checkpoint not found: /no/such/checkpoint"),
        (["predict", "/no/such/checkpoint", "x.png"], "input not found: x.png"),
        (
            ["predict", "/no/such/checkpoint", "x.png", "--out", "{tmp}/rows.txt"],
            "cannot tell the format from the suffix '.txt'",
        ),
        (["data", "synth", "--out", "{tmp}/s", "--n", "0"], "medvl: error:"),
    ],
)
def test_bad_input_gives_a_clear_error(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code = main(argv)
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("medvl: error:") and message in err


def test_predict_corrupt_single_image_is_a_clear_error(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(bad)
    bad.write_bytes(bad.read_bytes()[:20])  # truncated PNG
    assert main(["predict", str(trained_run), str(bad)]) == 2
    assert "cannot decode image" in capsys.readouterr().err


def test_train_on_a_missing_data_set_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "data.source=iu_xray", f"data.root={tmp_path / 'none'}", f"train.output_dir={tmp_path}"])
    assert code == 2 and "no annotation.json" in capsys.readouterr().err


def test_unusable_studies_are_skipped_and_counted_or_stop_the_run_with_strict(
    synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    shutil.copytree(synth_root, data)
    annotation = json.loads((data / "annotation.json").read_text())
    victim, empty = annotation["train"][0], annotation["train"][1]
    (data / "images" / victim["image_path"][0]).unlink()
    empty["report"] = ""
    (data / "annotation.json").write_text(json.dumps(annotation))
    argv = ["train", *tiny_overrides(data, tmp_path / "run", "train.max_steps=2")]
    assert main(argv) == 0
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["skipped"] == {
        victim["id"]: f"image file not found: {data / 'images' / victim['image_path'][0]}",
        empty["id"]: "empty report",
    }
    assert "2 studies were skipped" in capsys.readouterr().err
    assert main([*argv, "--strict", "--overwrite"]) == 2  # a new attempt in the same run folder
    err = capsys.readouterr().err
    assert f"study {victim['id']}: image file not found" in err and "data.strict=false" in err


def test_many_skipped_studies_are_counted_not_listed_one_by_one(
    synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from medvl.train.loop import Trainer

    data = tmp_path / "data"
    shutil.copytree(synth_root, data)
    annotation = json.loads((data / "annotation.json").read_text())
    n_empty = Trainer.SKIPS_SHOWN + 5
    for record in annotation["train"][:n_empty]:
        record["report"] = ""
    (data / "annotation.json").write_text(json.dumps(annotation))
    assert main(["train", *tiny_overrides(data, tmp_path / "run", "train.max_steps=1")]) == 0
    err = capsys.readouterr().err
    assert err.count("skipping study") == Trainer.SKIPS_SHOWN
    assert "further skipped studies are counted, not listed" in err
    assert f"{n_empty} studies were skipped" in err
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert len(summary["skipped"]) == n_empty


def test_evaluate_strict_stops_at_an_image_that_does_not_decode(
    trained_checkpoint: Path, synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An image file that exists but is not an image passes the up-front check; --strict must stop at it when it is
    read (it was skipped and counted, as without --strict, since the run's own data.strict was applied)."""
    data = tmp_path / "data"
    shutil.copytree(synth_root, data)
    victim = json.loads((data / "annotation.json").read_text())["test"][0]
    (data / "images" / victim["image_path"][0]).write_bytes(b"not a png")
    argv = ["evaluate", str(trained_checkpoint), "--split", "test", "--data-root", str(data), "--no-meteor"]
    argv += ["--bootstrap", "10", "--no-html"]
    assert main([*argv, "--out", str(tmp_path / "lenient")]) == 0
    assert "1 studies of split 'test' were skipped" in capsys.readouterr().err
    assert main([*argv, "--strict", "--out", str(tmp_path / "strict")]) == 2
    err = capsys.readouterr().err
    assert victim["id"] in err and "data.strict=false" in err
    assert not (tmp_path / "strict" / "metrics.json").exists()
