"""Model-agnostic batched greedy search, beam search and sampling over a KV-cached decoder.

Contract: a model is driven by two callables,
    step(tokens_last [N, 1], cache, position) -> (logits [N, vocab], cache)   # position of tokens_last (BOS: 0)
    reorder(cache, index [N]) -> cache                                         # beam search only
where N = batch_size * num_beams, row-major (row b's beams are b*K .. b*K+K-1), and `cache` passed in is valid for
those N rows. `generate` returns [B, L] token ids without BOS: a finished row ends with eos_id then pad_id; a row cut
at max_new_tokens has no EOS. Beam scores are sum log-prob / length**length_penalty (length counts generated tokens,
EOS included: the Hugging Face convention); a row stops once no open beam can beat its best finished one (assuming
log-probs are never positive, exact for length_penalty <= 0 and the usual heuristic above it).
Sampling draws each next token from softmax(logits / temperature) restricted to the top_k tokens (0 = all) and to the
smallest set whose probability reaches top_p (nucleus); a seeded generator makes it repeatable for the same batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

StepFn = Callable[[Tensor, Any, int], tuple[Tensor, Any]]
ReorderFn = Callable[[Any, Tensor], Any]


def ban_repeated_ngrams(logprobs: Tensor, seqs: Tensor, n: int) -> Tensor:
    """Set to -inf every token that would complete an n-gram already present in its row of `seqs` [N, T]."""
    if n <= 0 or seqs.shape[1] < n:
        return logprobs
    windows = seqs.unfold(1, n, 1)  # [N, T-n+1, n]
    prefix = seqs[:, seqs.shape[1] - n + 1 :]  # the n-1 latest tokens
    match = (windows[:, :, :-1] == prefix[:, None, :]).all(-1)
    banned = torch.zeros_like(logprobs).scatter_add_(1, windows[:, :, -1], match.to(logprobs.dtype))
    return logprobs.masked_fill(banned > 0, float("-inf"))


def greedy_search(
    step: StepFn,
    cache: Any,
    batch_size: int,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    max_new_tokens: int,
    no_repeat_ngram_size: int = 0,
    device: torch.device | str = "cpu",
) -> Tensor:
    """The most likely next token at every step; a row that emitted EOS is fed and padded with pad_id after it."""
    # One preallocated id buffer written a column per step (no concatenation that copies the history each step).
    seqs = torch.full((batch_size, max_new_tokens + 1), pad_id, dtype=torch.long, device=device)
    seqs[:, 0] = bos_id
    finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
    t = 0
    for t in range(max_new_tokens):
        logits, cache = step(seqs[:, t : t + 1], cache, t)
        # argmax of the logits is argmax of the log-probabilities: no softmax needed to pick the token.
        logits = ban_repeated_ngrams(logits.float(), seqs[:, : t + 1], no_repeat_ngram_size)
        token = logits.argmax(-1).masked_fill(finished, pad_id)
        seqs[:, t + 1] = token
        finished |= token == eos_id
        if bool(finished.all()):
            break
    return seqs[:, 1 : t + 2]


def filter_top_k_top_p(logits: Tensor, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Set to -inf every logit outside the top_k (0 = no limit) and outside the top_p nucleus; one always stays."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the tokens ranked above it already reach top_p (so the first token always stays).
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_search(
    step: StepFn,
    cache: Any,
    batch_size: int,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    no_repeat_ngram_size: int = 0,
    seed: int | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Draw each next token (see the module docstring); rows that emitted EOS are padded like greedy ones."""
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    seqs = torch.full((batch_size, max_new_tokens + 1), pad_id, dtype=torch.long, device=device)
    seqs[:, 0] = bos_id
    finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
    t = 0
    for t in range(max_new_tokens):
        logits, cache = step(seqs[:, t : t + 1], cache, t)
        logits = ban_repeated_ngrams(logits.float() / temperature, seqs[:, : t + 1], no_repeat_ngram_size)
        probs = filter_top_k_top_p(logits, top_k, top_p).softmax(-1)
        token = torch.multinomial(probs, 1, generator=generator).squeeze(1).masked_fill(finished, pad_id)
        seqs[:, t + 1] = token
        finished |= token == eos_id
        if bool(finished.all()):
            break
    return seqs[:, 1 : t + 2]


def beam_search(
    step: StepFn,
    reorder: ReorderFn,
    cache: Any,
    batch_size: int,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    max_new_tokens: int,
    num_beams: int,
    no_repeat_ngram_size: int = 0,
    length_penalty: float = 1.0,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Keep the k most likely open prefixes per row; EOS candidates close hypotheses and the best one is returned.

    All bookkeeping is batched tensor work (no Python loop over rows or candidates, no per-candidate host reads): the
    open beams live in one [B*K, max_new_tokens + 1] buffer, each row's best finished hypothesis in [B, max_new_tokens].
    """
    b, k = batch_size, num_beams
    seqs = torch.full((b * k, max_new_tokens + 1), pad_id, dtype=torch.long, device=device)
    seqs[:, 0] = bos_id
    scores = torch.full((b, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start identical: expand from one so the first step gives k distinct beams
    best_score = torch.full((b,), float("-inf"), device=device)
    best = torch.full((b, max_new_tokens), pad_id, dtype=torch.long, device=device)  # without BOS
    best_len = torch.zeros(b, dtype=torch.long, device=device)
    done = torch.zeros(b, dtype=torch.bool, device=device)
    row_base = torch.arange(b, device=device)[:, None] * k
    first_k = torch.arange(2 * k, device=device) < k
    for t in range(max_new_tokens):
        logits, cache = step(seqs[:, t : t + 1], cache, t)
        logprobs = ban_repeated_ngrams(logits.float().log_softmax(-1), seqs[:, : t + 1], no_repeat_ngram_size)
        vocab = logprobs.shape[-1]
        cand = (scores.view(-1, 1) + logprobs).view(b, k * vocab)
        # 2k candidates always hold k that are not EOS (each beam has one EOS), which keep the beams open.
        top_scores, top_idx = cand.topk(2 * k, dim=1)
        beam, token = top_idx // vocab, top_idx % vocab
        is_eos = token == eos_id
        length = t + 1
        # EOS among the k best candidates closes a hypothesis; the best closing one replaces the row's best finished
        # hypothesis if it scores higher (candidates are sorted, so it is the first closing one, as a scan would find).
        closing = is_eos & first_k & ~done[:, None] & (top_scores > float("-inf"))
        norm = (top_scores / length**length_penalty).masked_fill(~closing, float("-inf"))
        row_best, c = norm.max(dim=1)
        better = row_best > best_score
        source = row_base[:, 0] + beam.gather(1, c[:, None])[:, 0]
        closed = torch.cat([seqs[source, 1:length], torch.full((b, 1), eos_id, dtype=torch.long, device=device)], 1)
        best[:, :length] = torch.where(better[:, None], closed, best[:, :length])
        best_len = torch.where(better, length, best_len)
        best_score = torch.where(better, row_best, best_score)
        # The k best non-EOS candidates continue (stable sort keeps their rank order).
        keep = torch.sort(is_eos.to(torch.int8), dim=1, stable=True).indices[:, :k]
        scores = top_scores.gather(1, keep)
        index = (row_base + beam.gather(1, keep)).view(-1)
        seqs[:, :length] = seqs[:, :length].index_select(0, index)
        seqs[:, length] = token.gather(1, keep).view(-1)
        cache = reorder(cache, index)
        # A row is done once its best finished score beats the best open beam scored at the current length: exact
        # for length_penalty <= 0 (log-probs only fall), Hugging Face's default heuristic above it.
        done |= best_score >= scores[:, 0] / length**length_penalty
        if bool(done.all()):
            break
    else:  # max_new_tokens reached: open beams compete as they are
        final = scores / max_new_tokens**length_penalty
        final_best, c = final.max(dim=1)
        take = ~done & ((final_best > best_score) | (best_len == 0))
        best = torch.where(take[:, None], seqs[row_base[:, 0] + c, 1:], best)
        best_len = torch.where(take, max_new_tokens, best_len)
    return best[:, : int(best_len.max())]


def generate(
    step: StepFn,
    reorder: ReorderFn,
    cache: Any,
    batch_size: int,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    max_new_tokens: int,
    num_beams: int = 1,
    no_repeat_ngram_size: int = 0,
    length_penalty: float = 1.0,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Greedy (num_beams=1), beam search, or sampling (do_sample); see the module docstring for the contract."""
    if num_beams < 1 or max_new_tokens < 1:
        raise ValueError(f"need num_beams >= 1 and max_new_tokens >= 1, got {num_beams} and {max_new_tokens}")
    common = {
        "bos_id": bos_id,
        "eos_id": eos_id,
        "pad_id": pad_id,
        "max_new_tokens": max_new_tokens,
        "no_repeat_ngram_size": no_repeat_ngram_size,
        "device": device,
    }
    if do_sample:
        if num_beams != 1:
            raise ValueError(f"sampling draws one sequence per study: use num_beams=1, got {num_beams}")
        if temperature <= 0 or not 0 < top_p <= 1 or top_k < 0:
            raise ValueError(
                f"need temperature > 0, 0 < top_p <= 1 and top_k >= 0, got {temperature}, {top_p}, {top_k}"
            )
        return sample_search(
            step, cache, batch_size, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, **common
        )
    if num_beams == 1:
        return greedy_search(step, cache, batch_size, **common)
    return beam_search(step, reorder, cache, batch_size, num_beams=num_beams, length_penalty=length_penalty, **common)
