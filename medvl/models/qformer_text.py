"""BLIP-2's first-stage objectives for the xraygpt family's Q-Former (Li et al., 2023, "BLIP-2", section 3.1).

The Q-Former learns to pull from the image what the text needs before it ever feeds an LLM, through three losses
that share its self-attention layers (only the masks differ):

- ITC, image-text contrastive: the text alone (a unimodal mask) gives a text feature from its first token; each query
  output gives an image feature; a pair's similarity is the largest query-text cosine; symmetric InfoNCE over the
  batch with a learned temperature.
- ITM, image-text matching: queries and text attend to each other (bidirectional mask); a 2-way head on the mean
  query output tells matched pairs from hard negatives (for every image a text, and for every text an image, drawn
  in proportion to the ITC similarity).
- ITG, image-grounded text generation: text tokens attend to all queries and to earlier text (queries do not see the
  text), and predict the next token; the queries must therefore carry what the report says.

Contract: `QFormerTextSide(qformer_dim, vocab_size, max_len, pad_id)` holds what the text adds to the Q-Former (token
and position embeddings, a mode embedding on the first token per objective, ITC projections and temperature, the ITM
head, an LM head tied to the token embedding); the text feed-forward blocks live in the Q-Former's layers (HF's
`use_qformer_text_input`). `first_stage_losses(model, images, view_ids, view_mask, input_ids, attention_mask)` ->
{"itc", "itm", "itg", "itc_top1"} (scalars; itc_top1 is the image-to-text retrieval accuracy in the batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ITC, ITM, ITG = 0, 1, 2
EMBED_DIM = 256  # BLIP-2's contrastive embedding width


class QFormerTextSide(nn.Module):
    """The text side of a BLIP-2 Q-Former (see the module docstring)."""

    def __init__(self, qformer_dim: int, vocab_size: int, max_len: int, pad_id: int) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.token_embed = nn.Embedding(vocab_size, qformer_dim)
        self.pos_embed = nn.Embedding(max_len, qformer_dim)
        self.mode_embed = nn.Embedding(3, qformer_dim)  # BLIP-2's [CLS] / [ENC] / [DEC] first tokens
        self.vision_proj = nn.Linear(qformer_dim, EMBED_DIM)
        self.text_proj = nn.Linear(qformer_dim, EMBED_DIM)
        self.temp = nn.Parameter(torch.tensor(0.07))
        self.itm_head = nn.Linear(qformer_dim, 2)
        self.lm_norm = nn.LayerNorm(qformer_dim)
        self.lm_bias = nn.Parameter(torch.zeros(vocab_size))
        for emb in (self.token_embed, self.pos_embed, self.mode_embed):
            nn.init.normal_(emb.weight, std=0.02)

    def embed(self, input_ids: Tensor, mode: int) -> Tensor:
        """[B, T, D] text embeddings, the objective's mode added on the first token."""
        x = self.token_embed(input_ids) + self.pos_embed.weight[: input_ids.shape[1]]
        return torch.cat([x[:, :1] + self.mode_embed.weight[mode], x[:, 1:]], dim=1)

    def lm_logits(self, hidden: Tensor) -> Tensor:
        return F.linear(self.lm_norm(hidden), self.token_embed.weight, self.lm_bias)


def _additive(allowed: Tensor, dtype: torch.dtype) -> Tensor:
    """A [B, 1, L, L] additive attention mask from booleans (True = may attend)."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def _joint_mask(text_mask: Tensor, n_query: int, causal: bool) -> Tensor:
    """[B, 1, Q + T, Q + T] booleans: everything sees the queries and the text's real tokens (ITM), or, with `causal`,
    queries see queries only and text sees the queries and earlier text (ITG)."""
    b, t = text_mask.shape
    keys = torch.cat([text_mask.new_ones(b, n_query), text_mask], dim=1).bool()  # [B, L]
    allowed = keys[:, None, :].expand(b, n_query + t, n_query + t).clone()
    if causal:
        allowed[:, :n_query, n_query:] = False
        allowed[:, n_query:, n_query:] &= torch.ones(t, t, dtype=torch.bool, device=keys.device).tril()
    return allowed[:, None]


def _image_mask(feat_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """[B, 1, 1, P] additive mask of the image tokens, the same for every query (HF would otherwise size a 2-D mask
    to the whole query + text sequence, while only the queries cross-attend)."""
    return _additive(feat_mask.bool()[:, None, None, :], dtype)


def first_stage_losses(
    model: nn.Module, images: Tensor, view_ids: Tensor, view_mask: Tensor, input_ids: Tensor, attention_mask: Tensor
) -> dict[str, Tensor]:
    """ITC, ITM and ITG losses of an xraygpt model with `qformer_text` (see the module docstring).

    Args:
        model: an `XrayGPT` with bridge qformer and a `qformer_text` side.
        images, view_ids, view_mask: the standard report batch's image fields.
        input_ids, attention_mask: [B, T] BOS + report + EOS, right padded.
    """
    side: QFormerTextSide = model.qformer_text
    qformer, n_query = model.qformer, model.config.num_query_tokens
    feats, feat_mask = model.vision_tokens(images, view_ids, view_mask)
    b = feats.shape[0]
    queries = model.query_tokens.expand(b, -1, -1)
    dtype = feats.dtype

    # ITC: the query outputs against the unimodal text's first token.
    image_out = model.query_outputs(feats, feat_mask)  # [B, Q, D]
    text_out = qformer(
        query_embeds=side.embed(input_ids, ITC), query_length=0, attention_mask=attention_mask
    ).last_hidden_state
    image_feat = F.normalize(side.vision_proj(image_out), dim=-1)  # [B, Q, E]
    text_feat = F.normalize(side.text_proj(text_out[:, 0]), dim=-1)  # [B, E]
    temp = side.temp.clamp(0.001, 0.5)
    sim = torch.einsum("iqe,je->ijq", image_feat, text_feat).amax(-1) / temp  # [B images, B texts]
    target = torch.arange(b, device=sim.device)
    itc = (F.cross_entropy(sim, target, label_smoothing=0.1) + F.cross_entropy(sim.T, target, label_smoothing=0.1)) / 2
    itc_top1 = (sim.argmax(1) == target).float().mean()

    # ITM: positives, and for each image a hard negative text and for each text a hard negative image.
    img_idx, txt_idx, labels = target, target, torch.ones(b, dtype=torch.long, device=sim.device)
    if b > 1:
        with torch.no_grad():
            off_diagonal = ~torch.eye(b, dtype=torch.bool, device=sim.device)
            weights_i2t = sim.float().softmax(1) * off_diagonal + 1e-8 * off_diagonal
            weights_t2i = sim.float().T.softmax(1) * off_diagonal + 1e-8 * off_diagonal
            neg_txt = torch.multinomial(weights_i2t, 1)[:, 0]
            neg_img = torch.multinomial(weights_t2i, 1)[:, 0]
        img_idx = torch.cat([target, target, neg_img])
        txt_idx = torch.cat([target, neg_txt, target])
        labels = torch.cat([labels, torch.zeros(2 * b, dtype=torch.long, device=sim.device)])
    text_mask = attention_mask[txt_idx]
    joint = torch.cat([model.query_tokens.expand(len(img_idx), -1, -1), side.embed(input_ids[txt_idx], ITM)], dim=1)
    out = qformer(
        query_embeds=joint,
        query_length=n_query,
        attention_mask=_additive(_joint_mask(text_mask, n_query, causal=False), dtype),
        encoder_hidden_states=feats[img_idx],
        encoder_attention_mask=_image_mask(feat_mask[img_idx], dtype),
    )
    itm = F.cross_entropy(side.itm_head(out.last_hidden_state[:, :n_query]).mean(1), labels)

    # ITG: the report from the queries, next token by next token.
    joint = torch.cat([queries, side.embed(input_ids, ITG)], dim=1)
    out = qformer(
        query_embeds=joint,
        query_length=n_query,
        attention_mask=_additive(_joint_mask(attention_mask, n_query, causal=True), dtype),
        encoder_hidden_states=feats,
        encoder_attention_mask=_image_mask(feat_mask, dtype),
    )
    logits = side.lm_logits(out.last_hidden_state[:, n_query:-1])
    targets = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, -100)
    itg = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)
    return {"itc": itc, "itm": itm, "itg": itg, "itc_top1": itc_top1}


__all__ = ["QFormerTextSide", "first_stage_losses"]
