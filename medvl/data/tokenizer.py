"""The report tokenizer: byte-level BPE trained with HF `tokenizers`, used as a `transformers` fast tokenizer.

Special tokens have fixed ids (pad 0, bos 1, eos 2, unk 3) so a model config never has to look them up. Byte-level
means no text is ever unknown. The tokenizer is saved with every checkpoint as its JSON, and a run directory also gets a
`tokenizer/` folder that `AutoTokenizer.from_pretrained` (and `tokenizer.path`) reloads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")


MEDVL_SPECIALS = {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>"}


def _wrap(backend: Tokenizer, specials: dict[str, str | None] | None = None) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=backend, **(specials or MEDVL_SPECIALS))


def special_tokens(tok: PreTrainedTokenizerFast) -> dict[str, str | None]:
    """The pad/bos/eos/unk token strings of a tokenizer (stored with checkpoints next to its JSON)."""
    return {name: getattr(tok, name) for name in MEDVL_SPECIALS}


def _load_llm_tokenizer(path: Path) -> PreTrainedTokenizerFast:
    """An LLM's own tokenizer (tokenizer.json + tokenizer_config.json, e.g. Llama/Vicuna), offline; a missing pad
    token becomes the unk (else eos) token, as LLM fine-tuning code usually does."""
    tok = PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)
    missing = [name for name in ("bos_token", "eos_token") if getattr(tok, name) is None]
    if missing:
        raise ValueError(f"tokenizer in {path} has no {' or '.join(missing)}; medvl needs both to mark reports")
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token or tok.eos_token
    return tok


def train_bpe_tokenizer(
    texts: Sequence[str], vocab_size: int = 1200, min_frequency: int = 2
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts` (the training reports)."""
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("no non-empty report text to train the tokenizer on")
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return _wrap(backend)


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer saved with `save_pretrained` (a directory holding tokenizer.json), offline."""
    path = Path(path)
    if not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"no tokenizer.json in {path}: tokenizer.path must be a directory written by "
            "save_pretrained (e.g. runs/NAME/tokenizer, or an LLM's folder), or leave it empty "
            "to train a new one"
        )
    backend = Tokenizer.from_file(str(path / "tokenizer.json"))
    if backend.token_to_id("<bos>") is None and (path / "tokenizer_config.json").is_file():
        return _load_llm_tokenizer(path)  # an LLM's tokenizer, with its own special tokens
    tok = _wrap(backend)
    missing = [t for t in SPECIAL_TOKENS if tok.convert_tokens_to_ids(t) in (None, tok.unk_token_id) and t != "<unk>"]
    if missing:
        raise ValueError(f"tokenizer in {path} lacks the special tokens {missing}; medvl needs {list(SPECIAL_TOKENS)}")
    return tok


def tokenizer_to_json(tok: PreTrainedTokenizerFast) -> str:
    return tok.backend_tokenizer.to_str()


def tokenizer_from_json(text: str, specials: dict[str, str | None] | None = None) -> PreTrainedTokenizerFast:
    """The tokenizer of `tokenizer_to_json`, with its special tokens (medvl's own when `specials` is None)."""
    return _wrap(Tokenizer.from_str(text), specials)


def encode_report(tok: PreTrainedTokenizerFast, text: str, max_tokens: int) -> tuple[list[int], bool]:
    """BOS + tokens + EOS, cut to `max_tokens` (then the EOS is dropped); returns (ids, truncated)."""
    ids = [tok.bos_token_id, *tok.backend_tokenizer.encode(text, add_special_tokens=False).ids, tok.eos_token_id]
    if len(ids) > max_tokens:
        return ids[:max_tokens], True
    return ids, False


def decode_report(tok: PreTrainedTokenizerFast, ids: Sequence[int]) -> str:
    """Text of generated ids, stopping at the first EOS and ignoring BOS/padding."""
    out = []
    for i in ids:
        if i == tok.eos_token_id:
            break
        if i not in (tok.pad_token_id, tok.bos_token_id):
            out.append(int(i))
    return tok.backend_tokenizer.decode(out, skip_special_tokens=True).strip()
