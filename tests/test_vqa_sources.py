"""VQA sources in their public layouts (VQA-RAD, SLAKE, PathVQA), the synthetic chest X-ray VQA set, the text-only
summarization source, data.mixture, and text-only studies through the data pipeline; real VQA-RAD and SLAKE when
../shared/data has them."""

from __future__ import annotations

import json
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medvl.config.loader import ConfigError, from_dict
from medvl.data.config import DataConfig, MixtureEntry, SynthConfig
from medvl.data.dataset import ViewLoader, check_studies, collate_views
from medvl.data.layouts.cxr_vqa import size_answer
from medvl.data.layouts.vqa import carve_val, image_hash_share
from medvl.data.sources import SOURCES, DataSourceError, check_provides, load_studies
from medvl.data.study import Study
from tests.conftest import SHARED_DATA


def _png(path: Path, value: int = 100, suffix: str = ".png") -> Path:
    path = path.with_suffix(suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 10), value, np.uint8)).save(path)
    return path


def _rad_record(qid: int, image: str, answer: object = "Yes", atype: str = "CLOSED", qtype: str = "PRES") -> dict:
    return {
        "qid": qid,
        "image_name": image,
        "image_organ": "CHEST",
        "answer": answer,
        "answer_type": atype,
        "question_type": qtype,
        "question": f"question {qid}?",
        "phrase_type": "freeform",
    }


def test_all_sources_registered() -> None:
    for name in ("vqa_rad", "slake", "pathvqa", "cxr_vqa_synthetic", "report_summaries", "mixture"):
        assert name in SOURCES
    check_provides("vqa_rad", ("question", "answer"), "vqa")
    with pytest.raises(DataSourceError, match="needs labels"):
        check_provides("slake", ("labels",), "classification")


def test_vqa_rad_layout_suffix_fallback_and_val_carve(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    images = [f"synpic{i}.jpg" for i in range(40)]
    for k, name in enumerate(images):  # PNG copies of the JPEGs the question file names, one kept as JPEG
        _png(tmp_path / "images" / name, suffix=".jpg" if k == 0 else ".png")
    train = [
        _rad_record(q, images[q % 40], answer=4 if q == 7 else "Yes", atype="CLOSED " if q == 3 else "OPEN")
        for q in range(1, 121)
    ]
    train.append(_rad_record(999, "missing.jpg"))
    (tmp_path / "trainset.json").write_text(json.dumps(train))
    (tmp_path / "testset.json").write_text(json.dumps([_rad_record(1, images[1], "no")]))
    studies = load_studies(DataConfig(source="vqa_rad", root=str(tmp_path)))
    err = capsys.readouterr().err
    # one message with the count, not one per question
    assert err.count("name an image file that is absent") == 1
    assert "118 of 122 questions" in err  # 3 questions use images[0], present as named; one has no file at all
    assert "moved from train to val" in err
    assert set(studies) == {"train", "val", "test"}
    assert [s.id for s in studies["test"]] == ["test_1"] and studies["test"][0].answer == "no"
    every = {s.id: s for v in studies.values() for s in v}
    assert len(every) == 122
    assert every["train_7"].answer == "4" and every["train_3"].meta["answer_type"] == "closed"
    assert every["train_2"].image_paths == (tmp_path / "images" / "synpic2.png",)
    assert every["train_40"].image_paths == (tmp_path / "images" / "synpic0.jpg",)
    assert every["train_2"].meta == {
        "answer_type": "open",
        "question_type": "PRES",
        "image": "synpic2.jpg",
        "image_organ": "CHEST",
        "phrase_type": "freeform",
    }
    assert every["train_999"].problem.startswith("image file not found")
    # val by image: no image on both sides, and the chosen images are those whose hash falls under the share
    train_images = {s.meta["image"] for s in studies["train"]}
    val_images = {s.meta["image"] for s in studies["val"]}
    assert val_images and not train_images & val_images
    assert val_images == {n for n in train_images | val_images if image_hash_share(n) < 1 / 8}
    assert all(s.split == "val" for s in studies["val"])
    _, skipped = check_studies(studies["train"], strict=False, requirement=lambda s: "")
    assert [s.id for s in skipped] == ["train_999"]


def test_vqa_rad_missing_files_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="no trainset.json or testset.json"):
        load_studies(DataConfig(source="vqa_rad", root=str(tmp_path)))
    (tmp_path / "trainset.json").write_text(json.dumps([{"qid": 1}]))
    with pytest.raises(DataSourceError, match="no 'image_name', 'question', 'answer' field"):
        load_studies(DataConfig(source="vqa_rad", root=str(tmp_path)))


def _slake_record(qid: int, folder: str, lang: str = "en", answer: str = "Yes") -> dict:
    return {
        "img_id": int(folder[5:]),
        "img_name": f"{folder}/source.jpg",
        "question": f"q{qid}?",
        "answer": answer,
        "q_lang": lang,
        "location": "Lung",
        "modality": "CT",
        "answer_type": "CLOSED",
        "base_type": "vqa",
        "content_type": "Organ",
        "triple": ["vhead", "_", "_"],
        "qid": qid,
    }


@pytest.mark.parametrize("layout", ["original", "flattened"])
def test_slake_layouts_english_only(tmp_path: Path, layout: str, capsys: pytest.CaptureFixture) -> None:
    for k in range(3):
        if layout == "original":
            _png(tmp_path / "imgs" / f"xmlab{k}" / "source.jpg", suffix=".jpg")
        else:
            _png(tmp_path / "images" / f"xmlab{k}.png")
    (tmp_path / "train.json").write_text(
        json.dumps([_slake_record(0, "xmlab0"), _slake_record(1, "xmlab0", "zh"), _slake_record(2, "xmlab1")])
    )
    (tmp_path / "validate.json").write_text(json.dumps([_slake_record(3, "xmlab2", answer="")]))
    (tmp_path / "test.json").write_text(json.dumps([_slake_record(4, "xmlab2")]))
    studies = load_studies(DataConfig(source="slake", root=str(tmp_path)))
    err = capsys.readouterr().err
    assert {k: [s.id for s in v] for k, v in studies.items()} == {
        "train": ["train_0", "train_2"],
        "val": ["val_3"],
        "test": ["test_4"],
    }
    assert "1 questions in other languages" in err
    first = studies["train"][0]
    expected = tmp_path / ("imgs/xmlab0/source.jpg" if layout == "original" else "images/xmlab0.png")
    assert first.image_paths == (expected,) and first.meta["question_type"] == "Organ"
    assert studies["val"][0].problem  # an empty answer is counted, not dropped
    if layout == "flattened":
        assert "4 of 4 questions name an image file that is absent" in err
    else:
        assert "absent" not in err


def test_pathvqa_pickles_read_safely(tmp_path: Path) -> None:
    for split, n in (("train", 16), ("test", 2)):
        records = [
            {
                "image": f"{split}_{k // 2:04d}",
                "question": "Is this a nucleus?" if k % 2 else "What is present?",
                "answer": "yes" if k % 2 else "fibrosis",
            }
            for k in range(n)
        ]
        (tmp_path / "qas" / split).mkdir(parents=True)
        (tmp_path / "qas" / split / f"{split}_qa.pkl").write_bytes(pickle.dumps(records))
        for k in range(n // 2):
            _png(tmp_path / "images" / split / f"{split}_{k:04d}.jpg", suffix=".jpg")
    studies = load_studies(DataConfig(source="pathvqa", root=str(tmp_path)))
    every = [s for v in studies.values() for s in v]
    assert len(every) == 18 and not any(s.problem for s in every)
    assert Counter(s.meta["answer_type"] for s in every) == {"closed": 9, "open": 9}
    assert {s.meta["question_type"] for s in every} == {"is", "what"}
    assert studies["test"][0].image_paths == (tmp_path / "images/test/test_0000.jpg",)
    # a pickle that references any global (here a class) is refused instead of executed
    (tmp_path / "qas" / "train" / "train_qa.pkl").write_bytes(pickle.dumps([{"image": Path("x")}]))
    with pytest.raises(DataSourceError, match="only plain lists and dicts"):
        load_studies(DataConfig(source="pathvqa", root=str(tmp_path)))


def test_carve_is_deterministic_and_keeps_a_given_val() -> None:
    def study(i: int, image: str, split: str = "train") -> Study:
        return Study(str(i), (Path(image),), "", split, (0,), None, meta={"image": image}, question="q", answer="a")

    train = [study(i, f"img{i % 50}") for i in range(200)]
    a, b = carve_val({"train": train}, "x"), carve_val({"train": list(reversed(train))}, "x")
    assert sorted(s.id for s in a["val"]) == sorted(s.id for s in b["val"])
    assert 0 < len({s.meta["image"] for s in a["val"]}) < 50
    given = {"train": train, "val": [study(999, "v", "val")]}
    assert carve_val(given, "x") is given


def test_cxr_vqa_synthetic_questions_match_ground_truth(synth_root: Path, tmp_path: Path) -> None:
    cfg = DataConfig(
        source="cxr_vqa_synthetic", root=str(synth_root), synth=SynthConfig(n=40, seed=3, image_size=64, lateral=True)
    )
    studies = load_studies(cfg)
    annotation = json.loads((synth_root / "annotation.json").read_text())
    truth = {r["id"]: r for v in annotation.values() for r in v}
    every = [s for v in studies.values() for s in v]
    assert not any(s.problem for s in every)
    for s in every:
        record = truth[s.meta["study"]]
        labels, detail = record["labels"], record["findings_detail"]
        qtype = s.meta["question_type"]
        assert s.image_paths == (synth_root / "images" / record["image_path"][0],)
        assert s.split == record["split"]
        if qtype == "presence":
            finding = s.id.split("_presence_")[1]
            assert s.answer == ("yes" if labels[finding] else "no") and s.meta["answer_type"] == "closed"
        elif qtype == "side":
            assert s.answer == detail[s.id.split("_side_")[1]]["side"]
        elif qtype == "size":
            assert s.answer == size_answer(detail["nodule_mass"]["size_mm"])
        else:
            assert s.answer == str(sum(v for k, v in labels.items() if k != "support_devices"))
    presence = Counter(s.answer for s in every if s.meta["question_type"] == "presence")
    assert presence["no"] >= presence["yes"] and presence["no"] <= presence["yes"] + 40  # balanced per study
    assert {s.meta["question_type"] for s in every} >= {"presence", "count", "side"}
    # an empty root is drawn first, as data.source=synthetic does
    small = DataConfig(
        source="cxr_vqa_synthetic", root=str(tmp_path / "new"), synth=SynthConfig(n=3, image_size=64, lateral=False)
    )
    assert sum(len(v) for v in load_studies(small).values()) >= 3 * 3
    assert (size_answer(9.9), size_answer(10), size_answer(30), size_answer(31)) == (
        "under 1 cm",
        "1 to 3 cm",
        "1 to 3 cm",
        "over 3 cm",
    )


def test_report_summaries_layouts_and_text_only_pipeline(tmp_path: Path) -> None:
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "indiana_reports.csv").write_text(
        "uid,MeSH,Problems,image,indication,comparison,findings,impression\n"
        "1,normal,normal,x,,,The heart is normal.  Lungs clear.,No acute disease.\n"
        "2,normal,normal,x,,,Small effusion.,\n"
    )
    studies = load_studies(DataConfig(source="report_summaries", root=str(tmp_path / "csv")))
    every = {s.id: s for v in studies.values() for s in v}
    assert every["CXR1"].image_paths == () and every["CXR1"].question == "The heart is normal. Lungs clear."
    assert every["CXR1"].answer == "No acute disease." and every["CXR2"].problem == "no summary"
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"id": "a", "text": "long text", "summary": "short", "split": "validate"}) + "\n"
    )
    studies = load_studies(DataConfig(source="report_summaries", root=str(tmp_path), manifest="m.jsonl"))
    assert [(s.id, s.split, s.answer) for s in studies["val"]] == [("a", "val", "short")]
    xml = (
        '<eCitation><uId id="CXR7"/><Abstract><AbstractText Label="FINDINGS">Clear lungs.</AbstractText>'
        '<AbstractText Label="IMPRESSION">Normal chest.</AbstractText></Abstract></eCitation>'
    )
    (tmp_path / "openi" / "ecgen-radiology").mkdir(parents=True)
    (tmp_path / "openi" / "ecgen-radiology" / "7.xml").write_text(xml)
    studies = load_studies(DataConfig(source="report_summaries", root=str(tmp_path / "openi")))
    [s] = [s for v in studies.values() for s in v]
    assert (s.id, s.question, s.answer, s.problem) == ("CXR7", "Clear lungs.", "Normal chest.", "")

    # text-only studies: skipped as "no image" by image tasks, kept by a task that takes them; no views, no crash
    study = every["CXR1"]
    assert check_studies([study], strict=False, requirement=lambda s: "")[1][0].reason == "no image"
    assert check_studies([study], strict=False, requirement=lambda s: "", text_only=True)[0] == [study]
    views = ViewLoader(16, 2, channels=1)(study)
    assert views.shape == (0, 16, 16)
    image_study = Study("img", (_png(tmp_path / "one.png"),), "r", "train", (0,), None)
    sample = type("S", (), {"images": views, "view_ids": []})
    other = type("S", (), {"images": ViewLoader(16, 2)(image_study), "view_ids": [0]})
    images, _, mask = collate_views([sample, other], max_views=2)
    assert images.shape == (2, 2, 1, 16, 16) and mask.tolist() == [[False, False], [True, False]]
    assert float(images[0].abs().sum()) == 0.0


def test_mixture_prefixes_ids_merges_splits_and_refuses_unknown(tmp_path: Path) -> None:
    rad = tmp_path / "rad"
    _png(rad / "images" / "a.png")
    (rad / "testset.json").write_text(json.dumps([_rad_record(1, "a.png")]))
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "1", "text": "t", "summary": "s", "split": "test"}) + "\n")
    cfg = from_dict(
        DataConfig,
        {
            "source": "mixture",
            "mixture": [
                {"source": "vqa_rad", "root": str(rad)},
                {"source": "report_summaries", "root": str(tmp_path), "manifest": "m.jsonl", "name": "sum"},
            ],
        },
    )
    assert isinstance(cfg.mixture[0], MixtureEntry)
    studies = load_studies(cfg)
    assert [s.id for s in studies["test"]] == ["vqa_rad/test_1", "sum/1"]
    with pytest.raises(DataSourceError, match="unknown data source 'vqarad'. Did you mean 'vqa_rad'"):
        load_studies(DataConfig(source="mixture", mixture=[MixtureEntry(source="vqarad")]))
    with pytest.raises(ConfigError, match="set data.source=mixture"):
        from_dict(DataConfig, {"mixture": [{"source": "vqa_rad"}]})
    with pytest.raises(ValueError, match="more than once"):
        DataConfig(source="mixture", mixture=[MixtureEntry(source="slake"), MixtureEntry(source="slake")])


def test_prepare_keeps_questions_and_shares_image_rows(tmp_path: Path) -> None:
    from medvl.data.prepare import prepare

    rad = tmp_path / "rad"
    _png(rad / "images" / "a.png", 10)
    _png(rad / "images" / "b.png", 200)
    (rad / "trainset.json").write_text(
        json.dumps([_rad_record(q, "ab"[q % 2] + ".jpg", answer=f"ans{q}") for q in range(1, 9)])
    )
    info = prepare("vqa_rad", rad, tmp_path / "out", image_size=16, workers=0, progress=False)
    assert info["studies"] == 8 and info["rows"] == 2 and not info["problems"]
    studies = load_studies(DataConfig(source="prepared", root=str(tmp_path / "out")))
    every = {s.id: s for v in studies.values() for s in v}
    assert every["train_3"].question == "question 3?" and every["train_3"].answer == "ans3"
    assert int(ViewLoader(16, 1)(every["train_2"]).mean()) == 10
    assert int(ViewLoader(16, 1)(every["train_3"]).mean()) == 200


def _real(name: str) -> Path:
    root = SHARED_DATA / name
    if not root.is_dir():
        pytest.skip(f"../shared/data/{name} is not present")
    return root


def test_real_vqa_rad() -> None:
    studies = load_studies(DataConfig(source="vqa_rad", root=str(_real("vqa_rad"))))
    every = [s for v in studies.values() for s in v]
    assert len(every) == 3064 and set(studies) == {"train", "val"}  # testset.json is held back
    assert not any(s.problem for s in every)
    assert not {s.meta["image"] for s in studies["train"]} & {s.meta["image"] for s in studies["val"]}
    assert 0.09 < len(studies["val"]) / len(every) < 0.16
    assert Counter(s.meta["answer_type"] for s in every) == {"closed": 1823, "open": 1241}


def test_real_slake() -> None:
    studies = load_studies(DataConfig(source="slake", root=str(_real("slake"))))
    assert {k: len(v) for k, v in studies.items()} == {"train": 4919, "val": 1053}
    assert sum(bool(s.problem) for v in studies.values() for s in v) == 1  # one training question has no answer
    assert all(s.image_paths[0].is_file() for v in studies.values() for s in v)


def test_evaluate_takes_another_source_and_root() -> None:
    from medvl.cli import build_parser

    args = build_parser().parse_args(
        ["evaluate", "run/", "--data.source", "vqa_rad", "--data.root", "DIR", "--split", "test"]
    )
    assert (args.data_source, args.data_root, args.split) == ("vqa_rad", "DIR", "test")
