"""The `unified` family (BiomedGPT/OFA): flags, size presets, cached generation, constrained decoding, scoring."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from timm.layers import DropPath

from medvl.models.families import MODEL_FAMILIES
from medvl.models.unified.config import OFA_VOCAB_SIZE, UNIFIED_SIZES, UnifiedConfig
from medvl.models.unified.model import UnifiedModel
from medvl.models.unified.positions import image_relative_buckets, token_relative_buckets
from medvl.models.unified.trie import PrefixTrie

PAD, BOS, EOS, VOCAB = 0, 1, 2, 40


def tiny_config(**fields) -> UnifiedConfig:
    """A unit-test model: resnet18 stem at 32 px (a 2x2 patch grid), width 32, 2+2 layers."""
    base = dict(
        image_size=32,
        in_chans=1,
        resnet="resnet18",
        d_model=32,
        n_heads=4,
        ffn_dim=64,
        encoder_layers=2,
        decoder_layers=2,
        vocab_size=VOCAB,
        pad_id=PAD,
        max_source_positions=32,
        max_target_positions=32,
        token_bucket_size=8,
        image_bucket_size=4,
        dropout=0.0,
    )
    return UnifiedConfig(**{**base, **fields})


def tiny_model(seed: int = 0, dtype: torch.dtype = torch.float64, **fields) -> UnifiedModel:
    """Matrices (relative-bias tables included) drawn with a large spread so that generation varies and every bias
    path matters; float64 so that cached and uncached decoding cannot flip a near-tie."""
    torch.manual_seed(seed)
    model = UnifiedModel(tiny_config(**fields)).to(dtype).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "image_embed.backbone" not in name and p.ndim > 1:
                p.normal_(0.0, 0.5)
    return model


def batch(b: int = 3, s: int = 6, seed: int = 0, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(b, 1, 32, 32, generator=g, dtype=dtype)
    image_valid = torch.tensor([i % 3 != 1 for i in range(b)])  # every third example is text-only
    src_ids = torch.randint(3, VOCAB, (b, s), generator=g)
    src_mask = torch.ones(b, s, dtype=torch.bool)
    src_mask[0, s - 2 :] = False  # a padded instruction
    src_ids[~src_mask] = PAD
    return images, image_valid, src_ids, src_mask


# ---- flags ----


@pytest.mark.parametrize(
    "flag,module_name", [("attn_ln", "attn_ln"), ("ffn_ln", "ffn_ln"), ("head_scale", "head_scale")]
)
def test_each_normalization_flag_adds_its_module_and_changes_the_output(flag, module_name):
    on, off = tiny_model(**{flag: True}), tiny_model(**{flag: False})
    assert getattr(UnifiedConfig(), flag) is True  # the seed's setting: all three NormFormer operations on
    names_on = {n for n, _ in on.named_parameters() if module_name in n}
    assert names_on and not any(module_name in n for n, _ in off.named_parameters())
    # one per attention block (encoder self, decoder self + cross) or per FFN
    n_blocks = 2 + 2 * 2 if flag != "ffn_ln" else 2 + 2
    assert len({n.rsplit(".", 1)[0] for n in names_on}) == n_blocks
    images, image_valid, src_ids, src_mask = batch()
    prev = torch.randint(3, VOCAB, (3, 4))
    out_on = on(images, image_valid, src_ids, src_mask, prev)
    off.load_state_dict({k: v for k, v in on.state_dict().items() if module_name not in k})
    out_off = off(images, image_valid, src_ids, src_mask, prev)
    assert out_on.shape == out_off.shape == (3, 4, VOCAB) and torch.isfinite(out_on).all()
    if flag == "head_scale":  # ones at init: the identity, until the scales move
        assert torch.allclose(out_on, out_off)
        with torch.no_grad():
            for name, p in on.named_parameters():
                if name.endswith("head_scale"):
                    p.uniform_(0.2, 2.0)
        out_on = on(images, image_valid, src_ids, src_mask, prev)
    assert not torch.allclose(out_on, out_off)


def test_head_scale_starts_at_one_and_learns():
    model = UnifiedModel(tiny_config()).train()
    scales = [p for n, p in model.named_parameters() if n.endswith("head_scale")]
    assert len(scales) == 6 and all(p.shape == (4,) and torch.equal(p, torch.ones(4)) for p in scales)
    images, image_valid, src_ids, src_mask = batch(dtype=torch.float32)
    logits = model(images, image_valid, src_ids, src_mask, torch.randint(3, VOCAB, (3, 4)))
    F.cross_entropy(logits.flatten(0, 1), torch.randint(3, VOCAB, (12,))).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in scales)


def test_drop_path_is_stochastic_in_training_only():
    assert UnifiedConfig().encoder_drop_path_rate == 0.0  # OFA's architecture default
    model = tiny_model(encoder_drop_path_rate=0.5, decoder_drop_path_rate=0.5, resnet_drop_path_rate=0.2)
    rates = [m.drop_prob for m in model.modules() if isinstance(m, DropPath)]
    assert rates and max(rates) == pytest.approx(0.5) and min(rates) >= 0  # linear over depth; the first layer 0
    assert not any(isinstance(m, DropPath) for m in tiny_model().modules())
    args = (*batch(), torch.randint(3, VOCAB, (3, 4)))
    assert torch.equal(model(*args), model(*args))  # eval: identity
    model.train()
    torch.manual_seed(1)
    a = model(*args)
    torch.manual_seed(2)
    assert not torch.allclose(a, model(*args))


# ---- size presets ----

SEED_COUNTS_M = {"tiny": 33, "medium": 93, "base": 182, "large": 473, "huge": 930}
"""BiomedGPT's model sizes (the OFA sizes; issue 14 and the seed): parameters in millions."""


def test_size_presets_match_the_published_parameter_counts():
    """Counted on the meta device (no memory) with OFA's 59,457-entry dictionary (50,265 BPE + 8,192 image codes +
    1,000 location bins) and 3-channel images, which the published counts assume."""
    family = MODEL_FAMILIES.get("unified")
    assert family.task == "instructed_generation" and set(family.presets()) == set(SEED_COUNTS_M)
    for size, expected in SEED_COUNTS_M.items():
        config = family.make_config(size, {"vocab_size": OFA_VOCAB_SIZE, "in_chans": 3, "image_size": 256})
        with torch.device("meta"):
            model = family.build(config)
        count = sum(p.numel() for p in model.parameters())
        print(f"unified {size}: {count / 1e6:.1f}M parameters (BiomedGPT: {expected}M)")
        assert abs(count / 1e6 - expected) / expected < 0.05, (size, count)
    assert UNIFIED_SIZES["huge"]["encoder_layers"] == 24 and UNIFIED_SIZES["huge"]["decoder_layers"] == 12


# ---- generation ----


def _greedy_reference(model, images, image_valid, src_ids, src_mask, steps):
    """Greedy decoding by re-running the full teacher-forced forward on the whole prefix at every step."""
    prev = torch.full((src_ids.shape[0], 1), BOS)
    done = torch.zeros(src_ids.shape[0], dtype=torch.bool)
    for _ in range(steps):
        logits = model(images, image_valid, src_ids, src_mask, prev)[:, -1]
        logits[:, PAD] = float("-inf")
        nxt = logits.argmax(-1).masked_fill(done, PAD)
        prev = torch.cat([prev, nxt[:, None]], 1)
        done |= nxt == EOS
    return prev[:, 1:]


def test_cached_greedy_equals_the_full_recompute():
    model = tiny_model()
    args = batch(b=4)
    out = model.generate(*args, max_new_tokens=10, bos_id=BOS, eos_id=EOS, pad_id=PAD)
    ref = _greedy_reference(model, *args, steps=10)
    assert torch.equal(out, ref[:, : out.shape[1]])
    assert len(set(out[:, :3].flatten().tolist())) > 2  # the test model does not emit one token everywhere


@pytest.mark.parametrize("kwargs", [dict(num_beams=3), dict(num_beams=4, length_penalty=0.5, no_repeat_ngram_size=2)])
def test_cached_beam_search_equals_the_uncached_one(kwargs):
    model = tiny_model(seed=1)
    args = batch(b=3, seed=1)
    cached = model.generate(*args, max_new_tokens=8, bos_id=BOS, eos_id=EOS, pad_id=PAD, **kwargs)
    uncached = model.generate(*args, max_new_tokens=8, bos_id=BOS, eos_id=EOS, pad_id=PAD, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)


def test_beam_search_finds_a_sequence_at_least_as_likely_as_greedy():
    model = tiny_model(seed=2)
    args = batch(b=3, seed=2)
    greedy = model.generate(*args, max_new_tokens=6, bos_id=BOS, eos_id=EOS, pad_id=PAD)
    beam = model.generate(*args, max_new_tokens=6, bos_id=BOS, eos_id=EOS, pad_id=PAD, num_beams=5, length_penalty=0.0)
    for i in range(3):  # score each as a 1-candidate set under teacher forcing
        one = [a[i : i + 1] for a in args]
        g = model.score_candidates(*one, greedy[i : i + 1], bos_id=BOS, renormalize=False)
        b = model.score_candidates(*one, beam[i : i + 1], bos_id=BOS, renormalize=False)
        assert b.item() >= g.item() - 1e-9


def test_no_repeat_ngram_never_repeats():
    model = tiny_model(seed=3)
    out = model.generate(
        *batch(b=3, seed=3), max_new_tokens=12, bos_id=BOS, eos_id=EOS, pad_id=PAD, no_repeat_ngram_size=2, num_beams=2
    )
    for row in out.tolist():
        row = [t for t in row if t != PAD]
        grams = list(zip(row, row[1:]))
        assert len(grams) == len(set(grams))


@pytest.mark.parametrize("num_beams", [1, 3])
def test_trie_constrained_decoding_never_leaves_the_candidate_set(num_beams):
    model = tiny_model(seed=4)
    rng = random.Random(num_beams)
    for trial in range(4):
        candidates = {
            tuple(rng.randrange(3, VOCAB) for _ in range(rng.randint(1, 4))) + (EOS,) for _ in range(rng.randint(2, 6))
        }
        trie = PrefixTrie([list(c) for c in candidates])
        out = model.generate(
            *batch(b=3, seed=trial),
            max_new_tokens=8,
            bos_id=BOS,
            eos_id=EOS,
            pad_id=PAD,
            num_beams=num_beams,
            allowed_tokens=trie.allowed_tokens,
        )
        for row in out.tolist():
            while row and row[-1] == PAD:
                row.pop()
            assert tuple(row) in candidates


@pytest.mark.parametrize("num_beams", [1, 2])
def test_the_candidate_set_wins_over_no_repeat_ngram(num_beams):
    model = tiny_model(seed=4)
    trie = PrefixTrie([[5, 5, 5, EOS]])  # an answer that repeats itself
    out = model.generate(
        *batch(b=2),
        max_new_tokens=6,
        bos_id=BOS,
        eos_id=EOS,
        pad_id=PAD,
        num_beams=num_beams,
        no_repeat_ngram_size=1,
        allowed_tokens=trie.allowed_tokens,
    )
    assert out[:, :4].tolist() == [[5, 5, 5, EOS]] * 2


def _constrained_scores(model, inputs, i, candidates, trie, renormalize):
    """Beam score (summed log-prob / length) of each candidate for example i, teacher-forced, the log-probabilities
    renormalized over the trie's allowed tokens (what a masked-logit model learnt) or over the vocabulary."""
    out = []
    for c in candidates:
        target = torch.tensor(c)
        prev = torch.cat([torch.tensor([BOS]), target[:-1]])[None]
        logits = model(*(x[i : i + 1] for x in inputs), prev)[0]
        logits[:, PAD] = float("-inf")  # generation never emits the pad token
        if renormalize:
            logits = logits.masked_fill(~trie.mask(target[None], VOCAB)[0], float("-inf"))
        out.append(F.log_softmax(logits, -1).gather(-1, target[:, None]).sum().item() / len(c))
    return out


def test_beam_search_under_a_trie_scores_answers_renormalized_over_the_allowed_tokens():
    """OFA masks the logits before the softmax; with the raw softmax a beam would carry log(mass on the masked tokens),
    which a model trained with masked logits never learnt, and compare answers on it. With as many beams as
    candidates the search is exhaustive, so it must return the best renormalized score."""
    model = tiny_model(seed=7)
    rng = random.Random(7)
    inputs = batch(b=3, seed=7)
    differs = 0
    for _ in range(6):
        candidates = sorted(
            {tuple(rng.randrange(3, VOCAB) for _ in range(rng.randint(1, 3))) + (EOS,) for _ in range(4)}
        )
        trie = PrefixTrie([list(c) for c in candidates])
        out = model.generate(
            *inputs,
            max_new_tokens=4,
            bos_id=BOS,
            eos_id=EOS,
            pad_id=PAD,
            num_beams=len(candidates),
            allowed_tokens=trie.allowed_tokens,
        )
        for i, row in enumerate(out.tolist()):
            got = tuple(row[: row.index(EOS) + 1])
            new = _constrained_scores(model, inputs, i, candidates, trie, renormalize=True)
            old = _constrained_scores(model, inputs, i, candidates, trie, renormalize=False)
            assert got == candidates[max(range(len(candidates)), key=new.__getitem__)]
            differs += got != candidates[max(range(len(candidates)), key=old.__getitem__)]
    assert differs > 0  # the two normalizations pick different answers here, so the test tells them apart


def test_score_candidates_equals_teacher_forced_log_probs():
    model = tiny_model(seed=5)
    images, image_valid, src_ids, src_mask = batch(b=3, seed=5)
    # Two candidates share the first token 5, so position 0 allows {5, 9, 11} and position 1 after 5 allows {6, 8}.
    candidates = torch.tensor([[5, 6, 7, EOS], [9, EOS, PAD, PAD], [11, 12, EOS, PAD], [5, 8, EOS, PAD]])
    allowed_after = {(): [5, 9, 11], (5,): [6, 8]}  # every other prefix has exactly one continuation
    whole = model.score_candidates(
        images, image_valid, src_ids, src_mask, candidates, bos_id=BOS, chunk_size=2, renormalize=False
    )
    under_trie = model.score_candidates(images, image_valid, src_ids, src_mask, candidates, bos_id=BOS, chunk_size=2)
    assert whole.shape == under_trie.shape == (3, 4)
    for i in range(3):
        for k in range(4):
            target = candidates[k][candidates[k] != PAD]
            prev = torch.cat([torch.tensor([BOS]), target[:-1]])[None]
            logits = model(images[i : i + 1], image_valid[i : i + 1], src_ids[i : i + 1], src_mask[i : i + 1], prev)
            expected = F.log_softmax(logits[0], -1).gather(-1, target[:, None]).sum()
            assert whole[i, k].item() == pytest.approx(expected.item(), abs=1e-6)
            renormalized = 0.0  # by hand: log-softmax over each position's allowed tokens only
            for t in range(len(target)):
                options = allowed_after.get(tuple(target[:t].tolist()), [int(target[t])])
                restricted = F.log_softmax(logits[0, t, options], -1)
                renormalized += restricted[options.index(int(target[t]))].item()
            assert under_trie[i, k].item() == pytest.approx(renormalized, abs=1e-5)
    assert (under_trie > whole).all()  # renormalizing over fewer tokens raises every log-probability


# ---- inputs ----


def test_text_only_examples_ignore_the_image_tensor():
    model = tiny_model(seed=6)
    images, image_valid, src_ids, src_mask = batch(b=3, seed=6)  # example 1 is text-only
    prev = torch.randint(3, VOCAB, (3, 5))
    a = model(images, image_valid, src_ids, src_mask, prev)
    other = images.clone()
    other[1] = torch.rand_like(other[1]) * 100
    b = model(other, image_valid, src_ids, src_mask, prev)
    assert torch.equal(a[1], b[1])
    other[0] += 0.5
    assert not torch.allclose(model(other, image_valid, src_ids, src_mask, prev)[0], a[0])
    # a batch with no image at all works, and a text-only example does not depend on its batch-mates
    none = torch.zeros(3, dtype=torch.bool)
    c = model(images, none, src_ids, src_mask, prev)
    assert torch.allclose(c[1], a[1], atol=1e-10)
    memory, memory_mask = model.encode(images, none, src_ids, src_mask)
    assert memory.shape == (3, 4 + 6, 32) and not memory_mask[:, :4].any()


def test_padded_instruction_tokens_do_not_matter():
    model = tiny_model(seed=7)
    images, image_valid, src_ids, src_mask = batch(b=3, seed=7)
    prev = torch.randint(3, VOCAB, (3, 5))
    a = model(images, image_valid, src_ids, src_mask, prev)
    src_ids[0, -1] = 17  # under src_mask False
    assert torch.allclose(model(images, image_valid, src_ids, src_mask, prev), a, atol=1e-10)


def test_bad_inputs_name_the_problem():
    model = tiny_model()
    images, image_valid, src_ids, src_mask = batch()
    with pytest.raises(ValueError, match="image_size"):
        model.encode(images[:, :, :16, :16], image_valid, src_ids, src_mask)
    with pytest.raises(ValueError, match="max_source_positions"):
        long = torch.full((3, 40), 5)
        model.encode(images, image_valid, long, long > 0)
    with pytest.raises(ValueError, match="max_target_positions"):
        model.generate(images, image_valid, src_ids, src_mask, max_new_tokens=40, bos_id=BOS, eos_id=EOS)
    with pytest.raises(ValueError, match="image_bucket_size"):
        tiny_config(image_size=96)
    with pytest.raises(ValueError, match="divisible"):
        tiny_config(n_heads=5)
    with pytest.raises(ValueError, match="token_bucket_size"):
        tiny_config(token_bucket_size=1)
    with pytest.raises(ValueError, match="resnet"):
        UnifiedModel(tiny_config(resnet="vit_tiny_patch16_224"))


# ---- positions and trie ----


def test_relative_buckets():
    pos = torch.arange(300)
    b = token_relative_buckets(pos, pos, bucket_size=16, max_distance=300)
    assert b.min() >= 0 and b.max() <= 2 * 16 - 2
    assert (b.diagonal() == 15).all() and b[0, 1] == 16 and b[1, 0] == 14  # exact near zero, signed
    assert b[0, 299] == 30 and b[0, 200] <= 30 and b[0, 100] < b[0, 299]  # far offsets share log-spaced buckets
    img = image_relative_buckets(grid=3, bucket_size=4)
    assert img.shape == (9, 9) and len(img.diagonal().unique()) == 1
    assert img[0, 1] == img[3, 4] != img[1, 0]  # the same 2D offset, the same bucket; direction matters


def test_prefix_trie_allowed_and_mask():
    trie = PrefixTrie([[5, 6, EOS], [5, 7, EOS], [8, EOS]])
    assert trie.allowed([]) == [5, 8] and trie.allowed([5]) == [6, 7] and trie.allowed([5, 6]) == [EOS]
    assert trie.allowed([9]) == [] and trie.allowed([8, EOS]) == [] and [5, 7] in trie
    mask = trie.mask(torch.tensor([[5, 7, EOS, PAD]]), vocab_size=10, pad_id=PAD)
    assert mask.shape == (1, 4, 10)
    assert mask[0, 0].nonzero().flatten().tolist() == [5, 8]
    assert mask[0, 1].nonzero().flatten().tolist() == [6, 7]
    assert mask[0, 2].nonzero().flatten().tolist() == [EOS]
    assert mask[0, 3].all()  # padding: unconstrained (the loss ignores it)
    with pytest.raises(ValueError, match="empty"):
        PrefixTrie([[5], []])


def test_fresh_patch_tokens_carry_the_image():
    """At init the type embedding is on the token embedding's scale (fairseq's std d**-0.5): it does not drown the
    fresh ResNet's small features, so the patch tokens of different images differ (~1% of their energy here). With
    nn.Embedding's std 1 they differed by 0.03%: every image entered the encoder as nearly the same tokens."""
    torch.manual_seed(0)
    model = UnifiedModel(tiny_config(image_size=64, image_bucket_size=4)).eval()
    assert model.type_embedding.weight.std().item() == pytest.approx(32**-0.5, rel=0.3)
    images = torch.zeros(4, 1, 64, 64)
    for k in range(4):
        images[k, :, 16 * k : 16 * k + 16] = 1.0  # a bright band at another height in each image
    with torch.no_grad():
        patches = model.patch_norm(model.image_embed(images) + model.type_embedding.weight[1])  # [4, 16, 32]
    spread = (patches - patches.mean(0)).pow(2).sum() / patches.pow(2).sum()  # the share that differs by image
    assert spread > 0.003


def test_a_few_steps_learn_answers_that_depend_on_the_image_and_on_the_instruction():
    """Bright vs dark images under one instruction answer 7 vs 9; a text-only example with another instruction
    answers 11: after 30 Adam steps greedy decoding returns all three (the image path reaches the decoder)."""
    torch.manual_seed(0)
    model = UnifiedModel(tiny_config())
    images = torch.cat([torch.full((2, 1, 32, 32), 0.9), torch.full((2, 1, 32, 32), 0.1), torch.zeros(1, 1, 32, 32)])
    image_valid = torch.tensor([True, True, True, True, False])
    src_ids = torch.tensor([[5, 6, EOS]] * 4 + [[8, 6, EOS]])
    src_mask = torch.ones_like(src_ids, dtype=torch.bool)
    targets = torch.tensor([[7, EOS]] * 2 + [[9, EOS]] * 2 + [[11, EOS]])
    prev = torch.cat([torch.full((5, 1), BOS), targets[:, :-1]], 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(30):
        logits = model(images, image_valid, src_ids, src_mask, prev)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    out = model.generate(images, image_valid, src_ids, src_mask, max_new_tokens=3, bos_id=BOS, eos_id=EOS, num_beams=2)
    assert loss.item() < 0.1 and torch.equal(out[:, :2], targets)
