"""Teacher forcing with `logits_at`: the logits of the selected positions, and the packed path that computes only
those (`medvl.models.decoder.PackedRows`) against the padded computation."""

from __future__ import annotations

import pytest
import torch

from .test_models import VOCAB, make_batch, make_model


def test_logits_at_gives_the_logits_of_the_selected_positions() -> None:
    model = make_model()
    batch = make_batch(3)
    ids = torch.randint(2, VOCAB, (3, 9))
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[0, 5:], mask[2, 2:] = False, False
    with torch.no_grad():
        full = model(*batch, ids, mask.long())
        some = model(*batch, ids, mask.long(), logits_at=mask)
    assert some.shape == (int(mask.sum()), VOCAB)
    assert torch.allclose(some, full[mask], atol=1e-6)


@pytest.mark.parametrize("multiple", [4, 64])
@pytest.mark.parametrize("pattern", ["prefixes", "a hole", "past the attention mask"])
def test_packed_teacher_forcing_equals_the_padded_computation(
    pattern: str, multiple: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Right-padded rows run packed (padding skipped but for the rows that round the count up to `multiple`); any
    other `logits_at` falls back to the padded layout. Both give the padded computation's logits and gradients."""
    from medvl.models import decoder
    from medvl.models.decoder import TextDecoder

    monkeypatch.setattr(decoder, "PACK_MULTIPLE", multiple)

    model = make_model()
    batch = make_batch(3)
    ids = torch.randint(2, VOCAB, (3, 9))
    attention = torch.ones(3, 9, dtype=torch.bool)
    attention[0, 6:], attention[2, 3:] = False, False
    scored = attention.clone()
    scored[0, 5] = False  # row 0 scores 0..4 of its 6 real tokens: still a prefix
    if pattern == "a hole":
        scored[1, 2] = False
    elif pattern == "past the attention mask":
        scored[2, 3] = True
    packed_calls = []
    packed_rows = TextDecoder._packed_rows

    def spy(self: TextDecoder, *args: object) -> object:
        packed_calls.append(packed_rows(self, *args))
        return packed_calls[-1]

    def logits_and_grads() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        logits = model(*batch, ids, attention.long(), logits_at=scored)
        logits.square().sum().backward()
        return logits.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    monkeypatch.setattr(TextDecoder, "_packed_rows", spy)
    packed, packed_grads = logits_and_grads()
    assert (packed_calls[-1] is not None) == (pattern == "prefixes")
    if pattern == "prefixes":
        assert packed_calls[-1].scored == int(scored.sum()) == 5 + 9 + 3
        assert packed_calls[-1].index.numel() == {4: 20, 64: 27}[multiple]  # 27 positions in all
    monkeypatch.setattr(TextDecoder, "_packed_rows", lambda self, *args: None)
    padded, padded_grads = logits_and_grads()
    assert packed.shape == (int(scored.sum()), VOCAB)
    assert torch.allclose(packed, padded, atol=1e-5)
    assert len(packed_grads) == len(padded_grads) == len([p for p in model.parameters() if p.requires_grad])
    for a, b in zip(packed_grads, padded_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("scored_rows", [[5, 9, 3], [9, 9, 9]])
def test_logits_at_of_any_dtype_is_a_mask_and_must_match_the_tokens(scored_rows: list[int]) -> None:
    """A 0/1 long `logits_at` selects positions, packed (prefixes) or not (every position): indexing the padded
    path with it would gather whole rows instead. One whose shape differs from the tokens' is refused, where packing
    it would silently read the wrong tokens and positions."""
    model = make_model()
    batch = make_batch(3)
    ids = torch.randint(2, VOCAB, (3, 9))
    scored = torch.arange(9)[None, :] < torch.tensor(scored_rows)[:, None]
    expected = model(*batch, ids, None, logits_at=scored)
    logits = model(*batch, ids, None, logits_at=scored.long())
    assert logits.shape == (sum(scored_rows), VOCAB)
    assert torch.equal(logits, expected)
    with pytest.raises(ValueError, match="logits_at has shape"):
        model(*batch, ids, None, logits_at=scored[:, :8])


def test_packed_layers_run_through_their_wrappers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The packed path calls each decoder layer as a module, so what wraps a layer applies to it: with activation
    checkpointing a layer's packed forward runs again in the backward, and the gradients are unchanged."""
    from medvl.models.decoder import DecoderLayer
    from medvl.train.distributed import DistInfo
    from medvl.train.parallel import ParallelModel

    batch = make_batch(3)
    ids = torch.randint(2, VOCAB, (3, 9))
    scored = torch.ones(3, 9, dtype=torch.bool)
    scored[0, 5:], scored[2, 2:] = False, False
    calls = []
    forward_packed = DecoderLayer.forward_packed

    def spy(self: DecoderLayer, *args: object) -> torch.Tensor:
        calls.append(self)
        return forward_packed(self, *args)

    monkeypatch.setattr(DecoderLayer, "forward_packed", spy)
    grads = []
    for checkpointing in (False, True):
        model = make_model()
        ParallelModel(model, "none", DistInfo(), torch.device("cpu"), activation_checkpointing=checkpointing)
        calls.clear()
        model(*batch, ids, scored.long(), logits_at=scored).square().sum().backward()
        assert len(calls) == len(model.decoder.layers) * (2 if checkpointing else 1)
        grads.append([p.grad for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
