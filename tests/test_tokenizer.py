"""The byte-level BPE report tokenizer: training, round trips, saving and loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from medvl.data.tokenizer import (
    decode_report,
    encode_report,
    load_tokenizer,
    tokenizer_from_json,
    tokenizer_to_json,
    train_bpe_tokenizer,
)

REPORTS = [
    "FINDINGS: The heart is enlarged. No pneumothorax. IMPRESSION: Cardiomegaly.",
    "FINDINGS: Heart size is normal. The lungs are clear. IMPRESSION: No acute cardiopulmonary abnormality.",
    "FINDINGS: There is a small left pleural effusion. IMPRESSION: Small left pleural effusion.",
] * 20


@pytest.fixture(scope="module")
def tok():  # noqa: ANN201
    return train_bpe_tokenizer(REPORTS, vocab_size=400, min_frequency=2)


def test_special_token_ids_are_fixed(tok) -> None:  # noqa: ANN001
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)


def test_round_trip_including_unseen_text(tok) -> None:  # noqa: ANN001
    for text in [REPORTS[0], "Unseen wörds: 12 mm nodule (RUL)!"]:
        ids, truncated = encode_report(tok, text, max_tokens=512)
        assert not truncated and ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
        assert tok.unk_token_id not in ids  # byte level: nothing is unknown
        assert decode_report(tok, ids[1:]) == text


def test_bpe_learns_merges(tok) -> None:  # noqa: ANN001
    ids, _ = encode_report(tok, REPORTS[0], max_tokens=512)
    assert len(ids) < len(REPORTS[0]) / 2  # frequent words became single tokens


def test_truncation(tok) -> None:  # noqa: ANN001
    ids, truncated = encode_report(tok, REPORTS[1], max_tokens=5)
    assert truncated and len(ids) == 5 and ids[0] == tok.bos_token_id


def test_save_and_reload_as_transformers_tokenizer(tok, tmp_path: Path) -> None:  # noqa: ANN001
    tok.save_pretrained(str(tmp_path))
    again = load_tokenizer(tmp_path)
    assert again.encode(REPORTS[2]) == tok.encode(REPORTS[2])
    assert again.pad_token_id == 0 and again.eos_token_id == 2


def test_json_round_trip(tok) -> None:  # noqa: ANN001
    again = tokenizer_from_json(tokenizer_to_json(tok))
    assert again.encode(REPORTS[0]) == tok.encode(REPORTS[0]) and len(again) == len(tok)


def test_missing_tokenizer_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer(tmp_path / "nope")


def test_no_training_text_is_an_error() -> None:
    with pytest.raises(ValueError, match="no non-empty"):
        train_bpe_tokenizer(["", "  "])
