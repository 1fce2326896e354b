"""A prefix trie over tokenized candidate answers: which tokens may come next so the output stays a candidate.

Used to constrain decoding (`PrefixTrie.allowed` is the `allowed_tokens` callback of `generation.generate`) and
training (`PrefixTrie.mask` marks the allowed tokens at every target position; logits outside are masked), as
BiomedGPT/OFA do for VQA and classification over a closed answer set.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class PrefixTrie:
    """Trie of token sequences (each candidate should end in EOS so the decoder can finish it).

    Args:
        sequences: the candidates as token-id lists; duplicates are harmless.

    Raises:
        ValueError: no candidates, or an empty candidate.
    """

    def __init__(self, sequences: Sequence[Sequence[int]]) -> None:
        if not sequences:
            raise ValueError("PrefixTrie needs at least one candidate sequence")
        self._root: dict[int, dict] = {}
        for seq in sequences:
            if len(seq) == 0:
                raise ValueError("PrefixTrie: a candidate sequence is empty (tokenize it and append EOS)")
            node = self._root
            for token in seq:
                node = node.setdefault(int(token), {})
        self.n_sequences = len(sequences)

    def _node(self, prefix: Sequence[int]) -> dict[int, dict] | None:
        node = self._root
        for token in prefix:
            node = node.get(int(token))
            if node is None:
                return None
        return node

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        """Token ids that extend `prefix` towards some candidate, sorted; [] when prefix leaves the trie or completes
        a candidate that nothing extends."""
        node = self._node(prefix)
        return sorted(node) if node else []

    def __contains__(self, sequence: Sequence[int]) -> bool:
        """Whether `sequence` is a path from the root (a candidate or a prefix of one)."""
        return self._node(sequence) is not None

    def allowed_tokens(self, example_index: int, prefix: list[int]) -> list[int]:
        """The `allowed_tokens` callback of `generate` (the same trie for every example)."""
        return self.allowed(prefix)

    def mask(self, targets: Tensor, vocab_size: int, pad_id: int | None = None) -> Tensor:
        """Allowed-token mask for teacher forcing.

        Args:
            targets: Long [B, T], each row a candidate (its tokens, EOS included), right-padded.
            vocab_size: V.
            pad_id: the padding id (or the loss's ignore index); positions holding it, and positions after the
                prefix has left the trie, allow every token (the loss ignores or does not constrain them).

        Returns:
            Bool [B, T, V]: True where token v may follow targets[b, :t].
        """
        b, t = targets.shape
        out = torch.ones(b, t, vocab_size, dtype=torch.bool)
        rows = targets.tolist()
        for i, row in enumerate(rows):
            node = self._root
            for j, token in enumerate(row):
                if node is None or (pad_id is not None and token == pad_id):
                    break
                if node:
                    out[i, j] = False
                    out[i, j, list(node)] = True
                node = node.get(token)
        return out.to(targets.device)
