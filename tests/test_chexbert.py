"""The optional CheXbert backend, on a tiny checkpoint with CheXbert's key names written by the test."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from medvl.cli import main
from medvl.evaluate.chexbert import CheXbertLabeler, CheXbertUnavailableError
from medvl.evaluate.chexpert import CHEXPERT_14
from medvl.evaluate.scoring import score_corpus

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "heart", "is", "normal", "no", "effusion", "."]
# Forced class per head: 0 blank, 1 positive, 2 negative, 3 uncertain (head 13, No Finding: 0 blank, 1 positive).
FORCED = [1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 0]


@pytest.fixture(scope="module")
def chexbert_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from transformers import BertConfig, BertModel

    root = tmp_path_factory.mktemp("chexbert")
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    torch.manual_seed(0)
    bert = BertModel(
        BertConfig(
            vocab_size=len(VOCAB),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    )
    state = {f"module.bert.{k}": v for k, v in bert.state_dict().items()}
    for k, cls in enumerate(FORCED):  # zero weights + one large bias: the head always answers `cls`
        width = 2 if k == 13 else 4
        state[f"module.linear_heads.{k}.weight"] = torch.zeros(width, 32)
        state[f"module.linear_heads.{k}.bias"] = torch.nn.functional.one_hot(torch.tensor(cls), width).float() * 10
    ckpt = root / "chexbert.pth"
    torch.save({"epoch": 3, "model_state_dict": state}, ckpt)
    return ckpt, root


def test_labels_come_from_the_heads(chexbert_files: tuple[Path, Path]) -> None:
    ckpt, vocab_dir = chexbert_files
    labeler = CheXbertLabeler(ckpt, vocab_dir)
    labels = labeler.label(["The heart is normal.", "  No   effusion\n", "words the vocabulary lacks"])
    classes = (None, "positive", "negative", "uncertain")
    assert labels[0] == {name: classes[c] for name, c in zip(CHEXPERT_14, FORCED, strict=True)}
    assert labels[0] == labels[1] == labels[2]
    ones, zeros = labeler.binary(["x"], "positive")[0], labeler.binary(["x"], "negative")[0]
    assert ones.tolist() == [int(c in (1, 3)) for c in FORCED] and zeros.tolist() == [int(c == 1) for c in FORCED]
    # The vocab.txt path itself is accepted too.
    assert CheXbertLabeler(ckpt, vocab_dir / "vocab.txt").label(["x"]) == labels[:1]


def test_scores_gain_chexbert_metrics(chexbert_files: tuple[Path, Path]) -> None:
    refs, hyps = ["The heart is normal.", "No effusion."], ["The heart is normal.", "Cardiomegaly."]
    plain = score_corpus(refs, hyps, tokenizer="python", meteor=False, bootstrap=0)
    assert "--chexbert" in plain.unavailable["chexbert"] and "chexbert_14_micro_f1" not in plain.metrics
    assert "radgraph_f1" in plain.unavailable and "spice" in plain.unavailable
    with_cb = score_corpus(
        refs, hyps, tokenizer="python", meteor=False, bootstrap=20, chexbert=CheXbertLabeler(*chexbert_files)
    )
    # The forced heads label every text alike, so CheXbert sees perfect agreement.
    assert with_cb.metrics["chexbert_14_micro_f1"] == 1.0 and "chexbert_5_macro_f1_ci_low" in with_cb.metrics
    assert set(with_cb.per_finding["chexbert_14"]) == set(CHEXPERT_14) and "chexbert" not in with_cb.unavailable


def test_bad_chexbert_inputs(
    chexbert_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt, vocab_dir = chexbert_files
    with pytest.raises(CheXbertUnavailableError, match="not found: pass --chexbert"):
        CheXbertLabeler(tmp_path / "missing.pth", vocab_dir)
    with pytest.raises(CheXbertUnavailableError, match="needs its WordPiece tokenizer"):
        CheXbertLabeler(ckpt, None)
    with pytest.raises(CheXbertUnavailableError, match="no vocab.txt"):
        CheXbertLabeler(ckpt, tmp_path)
    code = tmp_path / "code.pth"
    code.write_bytes(pickle.dumps(Path("/"), protocol=2))  # a pickle that builds an object: never executed
    with pytest.raises(CheXbertUnavailableError, match="not a readable CheXbert checkpoint"):
        CheXbertLabeler(code, vocab_dir)
    other = tmp_path / "other.pth"
    torch.save({"model_state_dict": {"weight": torch.zeros(2)}}, other)
    with pytest.raises(CheXbertUnavailableError, match="does not hold CheXbert weights"):
        CheXbertLabeler(other, vocab_dir)
    refs = tmp_path / "r.jsonl"
    refs.write_text(json.dumps({"id": "a", "report": "The heart is normal."}) + "\n")
    assert (
        main(
            [
                "score",
                "--refs",
                str(refs),
                "--hyps",
                str(refs),
                "--hyp-field",
                "report",
                "--no-meteor",
                "--chexbert",
                str(tmp_path / "missing.pth"),
                "--chexbert-tokenizer",
                str(vocab_dir),
            ]
        )
        == 2
    )
    assert "CheXbert checkpoint" in capsys.readouterr().err
    assert (
        main(
            [
                "score",
                "--refs",
                str(refs),
                "--hyps",
                str(refs),
                "--hyp-field",
                "report",
                "--no-meteor",
                "--bootstrap",
                "0",
                "--chexbert",
                str(ckpt),
                "--chexbert-tokenizer",
                str(vocab_dir),
            ]
        )
        == 0
    )
    assert "chexbert_14_micro_f1" in capsys.readouterr().out
