"""`medvl predict` on real file types and study listings, batched, with per-study errors; sampling."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from medvl.cli import main
from medvl.infer.generation import filter_top_k_top_p, generate
from medvl.infer.inputs import collect_studies

from .dicom_files import write_dicom, xray_pattern


@pytest.fixture(scope="module")
def study_pngs(synth_root: Path) -> list[Path]:
    study = synth_root / "images" / json.loads((synth_root / "annotation.json").read_text())["test"][0]["id"]
    return [study / "0.png", study / "1.png"]


def rows_of(path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


def test_folder_of_png_and_dicom_studies_with_a_broken_file(
    trained_checkpoint: Path, study_pngs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "incoming"
    (folder / "s1").mkdir(parents=True)
    for p in study_pngs:
        shutil.copy(p, folder / "s1" / p.name)
    (folder / "s2").mkdir()
    write_dicom(folder / "s2" / "IM0001", xray_pattern(), view="LATERAL")  # no suffix, as scanners write them
    write_dicom(folder / "s2" / "IM0002", xray_pattern(), syntax="rle", view="PA")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = tmp_path / "preds.jsonl"
    assert main(["predict", str(trained_checkpoint), str(folder), "--out", str(out), "--batch-size", "2"]) == 0
    rows = rows_of(out)
    assert list(rows) == ["broken", "s1", "s2"]  # input order, one row each
    assert rows["s2"]["views"] == ["PA", "LATERAL"]  # frontal first, from the DICOM headers
    for sid in ("s1", "s2"):
        assert isinstance(rows[sid]["report"], str) and isinstance(rows[sid]["findings"], dict)
        assert rows[sid]["seconds"] > 0 and "error" not in rows[sid]
    assert "cannot decode image" in rows["broken"]["error"] and "report" not in rows["broken"]
    assert "2 reports written, 1 studies failed (first: broken:" in capsys.readouterr().err


def test_listings_globs_csv_output_and_strict(
    trained_checkpoint: Path, study_pngs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for p in study_pngs:
        shutil.copy(p, tmp_path / p.name)
    listing = tmp_path / "studies.csv"
    listing.write_text("id,image,view\na,0.png,PA\na,1.png,LATERAL\nb,1.png;0.png,LATERAL;PA\nc,missing.png,PA\n")
    out = tmp_path / "out.csv"
    assert main(["predict", str(trained_checkpoint), str(listing), "--out", str(out), "--no-progress"]) == 0
    rows = {r["id"]: r for r in csv.DictReader(out.open())}
    assert set(rows) == {"a", "b", "c"}
    assert rows["a"]["views"] == "PA;LATERAL" and rows["b"]["views"] == "PA;LATERAL"
    assert rows["a"]["report"] == rows["b"]["report"]  # the same two views, reordered frontal first
    assert json.loads(rows["a"]["findings"]) is not None and "image file not found" in rows["c"]["error"]
    capsys.readouterr()
    assert main(["predict", str(trained_checkpoint), str(listing), "--strict"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medvl: error: study c: image file not found") and "--strict" in err

    jsonl = tmp_path / "studies.jsonl"
    jsonl.write_text(json.dumps({"id": "j", "images": ["0.png", "1.png"]}) + "\n")
    listed = collect_studies([str(jsonl), str(tmp_path / "*.png")])
    assert [s.id for s in listed.studies] == ["j", "0", "1"] and listed.batch
    assert len(listed.studies[0].paths) == 2

    for patient in ("p1", "p2"):  # one 0.png per folder: ids taken from the path below the pattern's fixed part
        (tmp_path / "incoming" / patient).mkdir(parents=True)
        shutil.copy(study_pngs[0], tmp_path / "incoming" / patient / "0.png")
    shutil.copy(study_pngs[1], tmp_path / "incoming" / "p2" / "1.png")
    listed = collect_studies([str(tmp_path / "incoming" / "*" / "*.png")])
    assert [s.id for s in listed.studies] == ["p1/0", "p2/0", "1"]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (["{tmp}/nothing/*.png"], "no image file or folder of images matches"),
        (["{tmp}/bad.csv"], "has no image column"),
        (["{tmp}/dup.jsonl", "{tmp}/dup2.jsonl"], "study id 'x' appears twice"),
    ],
)
def test_bad_listings_are_clear_errors(
    trained_checkpoint: Path, tmp_path: Path, inputs: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.csv").write_text("id,report\n1,text\n")
    for name in ("dup.jsonl", "dup2.jsonl"):  # the same id in two listings
        (tmp_path / name).write_text('{"id": "x", "image": "a.png"}\n')
    argv = ["predict", str(trained_checkpoint), *[i.replace("{tmp}", str(tmp_path)) for i in inputs]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("medvl: error:") and message in err


def test_sampling_is_seeded_and_options_reach_generation(
    trained_checkpoint: Path, study_pngs: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "predict",
        str(trained_checkpoint),
        *map(str, study_pngs),
        "--sample",
        "--temperature",
        "1.5",
        "--top-p",
        "0.95",
    ]
    reports = []
    for seed in ("1", "1", "2", "3", "4"):
        assert main([*argv, "--seed", seed]) == 0
        reports.append(capsys.readouterr().out)
    assert reports[0] == reports[1]  # same seed, same report
    assert len(set(reports[1:])) > 1  # different seeds draw differently at a high temperature
    assert main([*argv, "--num-beams", "3"]) == 2
    assert "num_beams=1" in capsys.readouterr().err


def test_top_k_top_p_filter_and_top_k_1_is_greedy() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    assert torch.isinf(filter_top_k_top_p(logits, top_k=2)).tolist() == [[False, False, True, True]]
    probs = logits.softmax(-1)[0]  # 0.64, 0.24, 0.09, 0.03
    kept = ~torch.isinf(filter_top_k_top_p(logits, top_p=0.8))
    assert kept.tolist() == [[True, True, False, False]] and probs[0] < 0.8 <= probs[:2].sum()
    assert (~torch.isinf(filter_top_k_top_p(logits, top_p=0.01))).sum() == 1  # the best token always stays

    table = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))

    def step(tokens: torch.Tensor, cache: None, position: int) -> tuple[torch.Tensor, None]:
        return table[tokens[:, 0] % 5], cache

    common = {"bos_id": 1, "eos_id": 2, "pad_id": 0, "max_new_tokens": 6}
    greedy = generate(step, lambda c, i: c, None, 3, **common)
    sampled = generate(step, lambda c, i: c, None, 3, do_sample=True, top_k=1, seed=5, **common)
    assert torch.equal(greedy, sampled)


@pytest.mark.parametrize("many", [False, True])
def test_predict_refuses_an_existing_out_file_unless_overwrite(
    trained_checkpoint: Path, study_pngs: list[Path], tmp_path: Path, many: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "reports.jsonl"
    out.write_text("earlier results\n")
    images = [str(study_pngs[0].parent.parent)] if many else [str(p) for p in study_pngs]
    argv = ["predict", str(trained_checkpoint), *images, "--out", str(out), "--no-progress"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"medvl: error: {out} already exists: choose another --out or pass --overwrite to replace it\n"
    )
    assert out.read_text() == "earlier results\n"
    assert main([*argv, "--overwrite"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and all(r.get("report") is not None for r in rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports.jsonl"]  # written beside, then renamed
