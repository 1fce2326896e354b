"""Decoding for the unified model: greedy and beam search with a key/value cache, and candidate scoring.

- `generate(model, images, image_valid, src_ids, src_mask, *, max_new_tokens, bos_id, eos_id, pad_id=None,
  num_beams=1, length_penalty=1.0, no_repeat_ngram_size=0, allowed_tokens=None, use_cache=True)` -> Long [B, L],
  without BOS; a finished row ends with eos_id and is right-padded with pad_id (default: model.config.pad_id).
  The encoder runs once; the cross-attention keys/values are projected once; the self-attention cache grows by one
  position per step and is reordered with the beams. `use_cache=False` recomputes the whole prefix every step (the
  reference the tests compare the cache against).
- Beam search as in fairseq: each step keeps the `num_beams` best live continuations; an EOS among the best
  `num_beams` candidates ends a hypothesis scored sum(log p) / length ** length_penalty (length = generated tokens,
  EOS included); an example stops with `num_beams` finished hypotheses; live beams at max_new_tokens count too.
- `allowed_tokens(example_index, prefix)`: prefix = the tokens generated so far for that beam (no BOS); returns the
  token ids allowed next, or None for no restriction. A `PrefixTrie.allowed` over tokenized candidates keeps the
  output inside the candidate set; a restricted row's log-probabilities are renormalized over its allowed tokens (OFA
  masks the logits before the softmax), so a beam scores an answer by the constrained model's probability.
  `no_repeat_ngram_size=n` bans a token that would repeat an n-gram of the generated tokens, except where that would
  ban every allowed token (a candidate that repeats itself stays reachable). The pad token is never generated (unless
  it is also EOS).
- `score_candidates(model, images, image_valid, src_ids, src_mask, candidates [K, L], *, bos_id, pad_id=None)`
  -> [B, K] summed log-probabilities of each candidate (pad positions excluded) under teacher forcing, each
  position renormalized over the tokens that continue some candidate (as under the trie; `renormalize=False`: over
  the whole vocabulary).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from medvl.models.unified.trie import PrefixTrie

AllowedTokens = Callable[[int, list[int]], "list[int] | None"]


def _log_softmax(logits: Tensor) -> Tensor:
    """Log-probabilities in float32 at least (half-precision logits lose the small differences beams compare)."""
    return F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)


class _Stepper:
    """Next-token log-probabilities of every row's prefix, with or without the key/value cache."""

    def __init__(self, model, state, use_cache: bool) -> None:
        self.model, self.state, self.use_cache = model, state, use_cache

    def __call__(self, tokens: Tensor) -> Tensor:
        """tokens [R, t] (BOS first) -> log-probs [R, V] of the next token (float32)."""
        if self.use_cache:
            new = tokens if self.state.length == 0 else tokens[:, -1:]
            logits, self.state = self.model.decode_step(new, self.state)
        else:
            logits, _ = self.model.decode_step(tokens, self.state, use_cache=False)
        return _log_softmax(logits[:, -1])

    def expand(self, rows: Tensor) -> None:
        """Rows of the state -> `rows` (each example repeated once per beam)."""
        self.state = self.state.select(rows)

    def reorder(self, rows: Tensor) -> None:
        """Beams -> their continuations `rows` (each within its example)."""
        self.state = self.state.reorder_beams(rows)


def _banned_ngram_tokens(seq: list[int], n: int) -> set[int]:
    """Tokens that would complete an n-gram already in seq."""
    if n <= 0 or len(seq) < n - 1:
        return set()
    if n == 1:
        return set(seq)
    tail = tuple(seq[len(seq) - n + 1 :])
    return {seq[i + n - 1] for i in range(len(seq) - n + 1) if tuple(seq[i : i + n - 1]) == tail}


def _constrain(
    logprobs: Tensor,
    rows: list[tuple[int, int, list[int]]],
    *,
    pad_id: int,
    eos_id: int,
    no_repeat_ngram_size: int,
    allowed_tokens: AllowedTokens | None,
) -> Tensor:
    """Set disallowed next tokens to -inf. rows: (row index in logprobs, example index, generated prefix) of the
    live rows (finished rows are left alone)."""
    if pad_id != eos_id:
        logprobs = logprobs.clone()
        logprobs[:, pad_id] = float("-inf")
    if no_repeat_ngram_size <= 0 and allowed_tokens is None:
        return logprobs
    outside = torch.zeros(logprobs.shape, dtype=torch.bool)  # built on the CPU, moved once
    repeated = torch.zeros(logprobs.shape, dtype=torch.bool)
    for row, example, prefix in rows:
        allowed = allowed_tokens(example, prefix) if allowed_tokens is not None else None
        if allowed is not None:
            if len(allowed) == 0:
                raise ValueError(
                    f"allowed_tokens({example}, {prefix}) allowed no token; a prefix trie over the "
                    "candidates must allow EOS after a complete candidate"
                )
            outside[row] = True
            outside[row, torch.tensor(allowed, dtype=torch.long)] = False
        repeats = _banned_ngram_tokens(prefix, no_repeat_ngram_size)
        if repeats and (allowed is None or not set(allowed) <= repeats):  # the candidate set wins a conflict
            repeated[row, torch.tensor(sorted(repeats), dtype=torch.long)] = True
    if allowed_tokens is not None:
        # Renormalized over the allowed tokens, as OFA masks the logits before the softmax: the distribution a model
        # trained with masked logits learnt. Without it a beam's score carries log(mass on the masked tokens), which
        # such a model never learnt to keep small, and beams of different answers are compared on that noise.
        constrained = outside.any(-1).to(logprobs.device)
        masked = logprobs.masked_fill(outside.to(logprobs.device), float("-inf"))
        logprobs = torch.where(constrained[:, None], masked.log_softmax(-1), logprobs)
    return logprobs.masked_fill(repeated.to(logprobs.device), float("-inf"))


@torch.no_grad()
def generate(
    model,
    images: Tensor,
    image_valid: Tensor,
    src_ids: Tensor,
    src_mask: Tensor,
    *,
    max_new_tokens: int,
    bos_id: int,
    eos_id: int,
    pad_id: int | None = None,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    allowed_tokens: AllowedTokens | None = None,
    use_cache: bool = True,
) -> Tensor:
    """See the module docstring."""
    if max_new_tokens < 1 or num_beams < 1:
        raise ValueError(f"max_new_tokens and num_beams must be >= 1, got {max_new_tokens} and {num_beams}")
    if max_new_tokens > model.config.max_target_positions:
        raise ValueError(
            f"max_new_tokens={max_new_tokens} exceeds model.max_target_positions="
            f"{model.config.max_target_positions} (BOS + the generated tokens but the last)"
        )
    pad_id = model.config.pad_id if pad_id is None else pad_id
    memory, memory_mask = model.encode(images, image_valid, src_ids, src_mask)
    state = model.decoder_state(memory, memory_mask)
    opts = dict(pad_id=pad_id, eos_id=eos_id, no_repeat_ngram_size=no_repeat_ngram_size, allowed_tokens=allowed_tokens)
    if num_beams == 1:
        return _greedy(_Stepper(model, state, use_cache), src_ids.shape[0], max_new_tokens, bos_id, opts)
    return _beam_search(
        _Stepper(model, state, use_cache), src_ids.shape[0], max_new_tokens, bos_id, num_beams, length_penalty, opts
    )


def _greedy(step: _Stepper, batch: int, max_new_tokens: int, bos_id: int, opts: dict) -> Tensor:
    device = step.state.memory_mask.device
    tokens = torch.full((batch, 1), bos_id, dtype=torch.long, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    for _ in range(max_new_tokens):
        live = [(i, i, tokens[i, 1:].tolist()) for i in range(batch) if not finished[i]]
        logprobs = _constrain(step(tokens), live, **opts)
        nxt = logprobs.argmax(-1).masked_fill(finished, opts["pad_id"])
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        finished |= nxt == opts["eos_id"]
        if finished.all():
            break
    return tokens[:, 1:]


def _beam_search(
    step: _Stepper, batch: int, max_new_tokens: int, bos_id: int, k: int, length_penalty: float, opts: dict
) -> Tensor:
    device = step.state.memory_mask.device
    eos_id, pad_id = opts["eos_id"], opts["pad_id"]
    step.expand(torch.arange(batch, device=device).repeat_interleave(k))
    tokens = torch.full((batch * k, 1), bos_id, dtype=torch.long, device=device)
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start identical: expand the first only
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
    done = [False] * batch
    for t in range(max_new_tokens):
        live = [
            (b * k + j, b, tokens[b * k + j, 1:].tolist())
            for b in range(batch)
            if not done[b]
            for j in range(k)
            if scores[b, j] > float("-inf")
        ]
        logprobs = _constrain(step(tokens), live, **opts)
        vocab = logprobs.shape[-1]
        candidates = (scores.reshape(-1, 1) + logprobs).view(batch, k * vocab)
        top_scores, top_idx = candidates.topk(min(2 * k, k * vocab), dim=1)
        rows, next_tokens, next_scores = [], [], []
        for b in range(batch):
            chosen: list[tuple[int, int, float]] = []
            if not done[b]:
                for rank, (s, idx) in enumerate(zip(top_scores[b].tolist(), top_idx[b].tolist())):
                    if s == float("-inf") or len(chosen) == k:
                        break
                    row, token = b * k + idx // vocab, idx % vocab
                    if token == eos_id:
                        if rank < k:  # fairseq: only an EOS among the best k candidates ends a hypothesis
                            finished[b].append((s / (t + 1) ** length_penalty, tokens[row, 1:].tolist() + [eos_id]))
                    else:
                        chosen.append((row, token, s))
                done[b] = len(finished[b]) >= k or not chosen
            chosen += [(b * k, pad_id, float("-inf"))] * (k - len(chosen))
            for row, token, s in chosen:
                rows.append(row), next_tokens.append(token), next_scores.append(s)
        if all(done):
            break
        rows_t = torch.tensor(rows, device=device)
        tokens = torch.cat([tokens.index_select(0, rows_t), torch.tensor(next_tokens, device=device)[:, None]], 1)
        scores = torch.tensor(next_scores, device=device).view(batch, k)
        step.reorder(rows_t)
    else:
        for b in range(batch):  # live beams at the length limit are hypotheses too
            if not done[b]:
                n = tokens.shape[1] - 1
                finished[b] += [
                    (scores[b, j].item() / n**length_penalty, tokens[b * k + j, 1:].tolist())
                    for j in range(k)
                    if scores[b, j] > float("-inf")
                ]
    best = [max(hyps, key=lambda h: h[0])[1] if hyps else [] for hyps in finished]
    out = torch.full((batch, max(1, max(len(s) for s in best))), pad_id, dtype=torch.long, device=device)
    for b, seq in enumerate(best):
        out[b, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out


def score_candidates(
    model,
    images: Tensor,
    image_valid: Tensor,
    src_ids: Tensor,
    src_mask: Tensor,
    candidates: Tensor,
    *,
    bos_id: int,
    pad_id: int | None = None,
    chunk_size: int = 256,
    renormalize: bool = True,
) -> Tensor:
    """See the module docstring. candidates Long [K, L], each right-padded with pad_id (and ending in EOS, which is
    scored) -> [B, K] (float32, or float64 for a float64 model). The encoder runs once per example; the decoder
    runs in chunks of `chunk_size` candidates that share (broadcast, not copy) the example's cross-attention
    keys/values. With `renormalize` (the default) each position's log-probabilities are taken over the tokens that
    continue some candidate with that prefix (a `PrefixTrie` of the candidates), as beam search under the trie and
    the trie-masked training loss take them; False scores under the whole vocabulary."""
    if candidates.ndim != 2 or candidates.shape[0] == 0:
        raise ValueError(f"candidates must be a non-empty [K, L] tensor, got shape {list(candidates.shape)}")
    pad_id = model.config.pad_id if pad_id is None else pad_id
    memory, memory_mask = model.encode(images, image_valid, src_ids, src_mask)
    state = model.decoder_state(memory, memory_mask)
    candidates = candidates.to(memory.device)
    prev = torch.cat([torch.full_like(candidates[:, :1], bos_id), candidates[:, :-1]], dim=1)
    real = candidates != pad_id
    trie = PrefixTrie([[t for t in row if t != pad_id] for row in candidates.tolist()]) if renormalize else None
    out = memory.new_empty(memory.shape[0], candidates.shape[0], dtype=torch.promote_types(memory.dtype, torch.float32))
    allowed: dict[int, Tensor] = {}
    for b in range(memory.shape[0]):
        for start in range(0, candidates.shape[0], chunk_size):
            stop = min(start + chunk_size, candidates.shape[0])
            rows = state.broadcast_row(b, stop - start)
            logits, _ = model.decode_step(prev[start:stop], rows, use_cache=False)
            if trie is not None:
                if start not in allowed:  # the same for every example: built once per chunk
                    allowed[start] = trie.mask(candidates[start:stop], logits.shape[-1], pad_id)
                logits = logits.masked_fill(~allowed[start], float("-inf"))
            logprobs = _log_softmax(logits).gather(-1, candidates[start:stop, :, None])[..., 0]
            out[b, start:stop] = (logprobs * real[start:stop]).sum(-1)
    return out
