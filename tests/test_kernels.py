"""medvl's own CPU paths for attention and dropout compute what torch's do (`medvl.models.attention`,
`medvl.models.dropout`)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medvl.models.attention import attend, matmul_attention
from medvl.models.dropout import Dropout, cpu_keep_mask


def _qkv(dtype: torch.dtype, tq: int = 7, tk: int = 7) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    shapes = ((2, 3, tq, 8), (2, 3, tk, 8), (2, 3, tk, 8))
    return tuple(torch.randn(s, generator=g).to(dtype).requires_grad_() for s in shapes)


def _reference(q, k, v, mask=None, causal=False):  # noqa: ANN001, ANN202
    return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, is_causal=causal)


@pytest.mark.parametrize("kind", ["none", "causal", "bool", "bias"])
def test_bf16_cpu_attention_matches_sdpa_in_fp32_with_gradients(kind: str) -> None:
    q, k, v = _qkv(torch.bfloat16, tq=5, tk=5 if kind == "causal" else 9)
    mask = None
    if kind == "bool":
        mask = torch.rand(2, 1, 5, 9, generator=torch.Generator().manual_seed(1)) > 0.4
        mask[..., 0] = True  # every query keeps a key
    if kind == "bias":
        mask = torch.randn(2, 3, 5, 9, generator=torch.Generator().manual_seed(1))
    causal = kind == "causal"
    out = attend(q, k, v, None if mask is None else (mask if mask.dtype == torch.bool else mask.bfloat16()), causal)
    assert out.dtype == torch.bfloat16 and out.shape == (2, 3, 5, 8)
    expected = _reference(q, k, v, mask, causal)
    torch.testing.assert_close(out.float(), expected, atol=3e-2, rtol=3e-2)
    grads = torch.autograd.grad(out.float().sum(), (q, k, v))
    expected_grads = torch.autograd.grad(expected.sum(), (q, k, v))
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got.float(), want.float(), atol=6e-2, rtol=6e-2)


def test_causal_query_sees_only_earlier_keys() -> None:
    q, k, v = _qkv(torch.float32)
    out = matmul_attention(q, k, v, causal=True)
    # The first query sees only the first key: its output is that key's value.
    torch.testing.assert_close(out[..., 0, :], v[..., 0, :])
    torch.testing.assert_close(out, _reference(q, k, v, causal=True), atol=1e-5, rtol=1e-5)


def test_fp32_attention_is_sdpa() -> None:
    q, k, v = _qkv(torch.float32)
    assert torch.equal(attend(q, k, v, causal=True), F.scaled_dot_product_attention(q, k, v, is_causal=True))


def test_attention_refuses_a_mask_with_causal() -> None:
    q, k, v = _qkv(torch.float32)
    with pytest.raises(ValueError, match="either an attention mask or causal"):
        attend(q, k, v, torch.ones(7, 7, dtype=torch.bool), causal=True)


def test_drop_mask_rate_and_rounding() -> None:
    torch.manual_seed(0)
    shape = torch.Size([1000, 1000])
    for p in (0.1, 0.5):
        rate = (~cpu_keep_mask(shape, p, torch.device("cpu"))).float().mean().item()
        assert abs(rate - p) < 0.002, (p, rate)  # 1M draws: the standard error is 0.0005 at most
    assert not (~cpu_keep_mask(shape, 0.0, torch.device("cpu"))).any()
    # Lanes of 16 bits: p below half a step rounds to never dropping.
    assert not (~cpu_keep_mask(shape, 0.4 / 65536, torch.device("cpu"))).any()


def test_dropout_scales_kept_values_and_gradients() -> None:
    torch.manual_seed(0)
    drop = Dropout(0.25).train()
    x = torch.rand(64, 33, dtype=torch.float64) + 1.0  # never 0, so a 0 output means dropped
    x.requires_grad_()
    y = drop(x)
    kept = y != 0
    assert 0.2 < 1 - kept.double().mean().item() < 0.3
    torch.testing.assert_close(y[kept], x[kept] / 0.75)
    (grad,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(grad, kept.double() / 0.75)


def test_dropout_is_identity_in_eval_repeatable_under_a_seed_and_keeps_bf16() -> None:
    x = torch.randn(4, 16, 8, dtype=torch.bfloat16)
    assert Dropout(0.5).eval()(x) is x
    assert Dropout(0.0).train()(x) is x
    torch.manual_seed(3)
    first = Dropout(0.5).train()(x)
    torch.manual_seed(3)
    second = Dropout(0.5).train()(x)
    assert first.dtype == torch.bfloat16 and torch.equal(first, second)
    assert 0 < (first == 0).sum() < x.numel()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_keeps_nan_and_scales_bf16_in_fp32(dtype: torch.dtype) -> None:
    """As nn.Dropout: a NaN stays NaN whether dropped or kept, and a kept bf16 value is x * (1 / (1 - p)) computed
    in fp32 and rounded once (not x times the scale rounded to bf16, which would be biased)."""
    x = torch.rand(256, 64, dtype=dtype) + 1.0
    x[0, :] = float("nan")
    torch.manual_seed(0)
    y = Dropout(0.1).train()(x)
    assert y[0].isnan().all()
    kept = (y != 0) & ~y.isnan()
    assert 0.05 < 1 - kept[1:].float().mean().item() < 0.15
    assert torch.equal(y[kept], (x.float() * (1.0 / 0.9)).to(dtype)[kept])


def test_drop_mask_near_one_drops_everything() -> None:
    """p within half a step of 1 rounds to dropping every element; its threshold (32,768) must not wrap around the
    int16 lanes' range, which kept every element scaled by 1 / (1 - p)."""
    torch.manual_seed(0)
    assert (~cpu_keep_mask(torch.Size([4096]), 1 - 1e-6, torch.device("cpu"))).all()
    y = Dropout(1 - 1e-6).train()(torch.ones(4096))
    assert not y.any()


@pytest.mark.parametrize("kind", ["bool", "bias"])
def test_a_query_that_sees_no_key_gets_zeros_as_from_sdpa(kind: str) -> None:
    """SDPA (torch >= 2.5) gives such a query a zero output and zero gradients; the matmul path must too, not NaN."""
    q, k, v = _qkv(torch.bfloat16, tq=3, tk=5)
    mask = torch.ones(2, 1, 3, 5, dtype=torch.bool)
    mask[0, :, 1] = False  # query 1 of the first row sees no key
    if kind == "bias":
        mask = torch.zeros(2, 1, 3, 5, dtype=torch.bfloat16).masked_fill(~mask, float("-inf"))
    out = attend(q, k, v, mask)
    assert torch.equal(out[0, :, 1], torch.zeros_like(out[0, :, 1]))
    torch.testing.assert_close(
        out.float(), _reference(q, k, v, mask.float() if kind == "bias" else mask), atol=3e-2, rtol=3e-2
    )
    grads = torch.autograd.grad(out.float().sum(), (q, k, v))
    assert all(torch.isfinite(g).all() for g in grads)
    torch.testing.assert_close(grads[0][0, :, 1], torch.zeros_like(grads[0][0, :, 1]))
