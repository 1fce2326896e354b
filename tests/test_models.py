"""The captioner family: image encoders, the cached decoder, the model, and batched greedy / beam search."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest
import torch

from medvl.infer.generation import ban_repeated_ngrams, beam_search, generate
from medvl.models.captioner import CAPTIONER_SIZES, Captioner, CaptionerConfig
from medvl.models.decoder import reorder_cache
from medvl.models.encoders import ENCODERS

VOCAB, BOS, PAD = 40, 1, 0


def tiny_config(**fields: object) -> CaptionerConfig:
    return CaptionerConfig(**{**CAPTIONER_SIZES["tiny"], "vocab_size": VOCAB, "max_len": 24, **fields})


def make_model(seed: int = 0, **fields: object) -> Captioner:
    """A tiny model whose weights outside the encoder are redrawn larger than at init, so that (untrained) its
    outputs differ from image to image, repeat themselves, and hit a given EOS at different steps in different rows."""
    torch.manual_seed(seed)
    model = Captioner(tiny_config(**fields)).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2 and not name.startswith("encoder."):
                p.copy_(torch.randn(p.shape, generator=g) * 2.0 / p.shape[-1] ** 0.5)
    return model


def make_batch(b: int = 5, size: int = 32, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(b, 2, 1, size, size, generator=g)
    view_ids = torch.tensor([[0, 1]] * b)
    view_mask = torch.ones(b, 2, dtype=torch.bool)
    if b > 1:
        view_mask[1, 1] = False  # one study without a lateral view
        images[1, 1] = 0.0
    return images, view_ids, view_mask


def sequence_logprob(model: Captioner, batch: tuple, row: int, seq: torch.Tensor) -> float:
    """Sum of the model's log-probs of `seq` (generated ids, padding stripped) after BOS."""
    images, view_ids, view_mask = (t[row : row + 1] for t in batch)
    inputs = torch.cat([torch.tensor([BOS]), seq[:-1]])[None]
    logits = model(images, view_ids, view_mask, inputs, torch.ones_like(inputs))
    return float(logits.log_softmax(-1)[0].gather(1, seq[:, None]).sum())


def strip(row: torch.Tensor, eos: int) -> torch.Tensor:
    """Generated ids up to and including the first EOS (all of them when there is none)."""
    hits = (row == eos).nonzero()
    return row[: int(hits[0]) + 1] if len(hits) else row


def common_eos(model: Captioner, batch: tuple) -> int:
    """A token that greedy decoding emits in some rows (at different steps), to serve as EOS in tests."""
    free = model.generate(*batch, bos_id=BOS, eos_id=VOCAB + 7, max_new_tokens=12)
    counts = torch.bincount(free[:, 2:].flatten(), minlength=VOCAB)
    counts[[PAD, BOS]] = 0
    return int(counts.argmax())


# --- encoders ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,fields,grid,dim",
    [
        ("conv", {"conv_channels": (8, 16, 24), "conv_blocks": (1, 2, 1), "image_size": 64}, (8, 8), 24),
        ("vit", {"image_size": 48, "patch_size": 8, "vit_dim": 32, "vit_depth": 2, "vit_heads": 4}, (6, 6), 32),
    ],
)
def test_scratch_encoders_give_patch_grids(name: str, fields: dict, grid: tuple, dim: int) -> None:
    encoder = ENCODERS.get(name)(tiny_config(encoder=name, **fields))
    x = torch.randn(3, 1, fields["image_size"], fields["image_size"])
    out = encoder(x)
    assert encoder.grid == grid and encoder.out_dim == dim
    assert out.shape == (3, grid[0] * grid[1], dim)
    assert torch.isfinite(out).all()


def test_torchvision_encoder_loads_local_weights(tmp_path: Path) -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    config = tiny_config(encoder="torchvision", encoder_name="resnet18", encoder_weights=str(path), image_size=64)
    encoder = ENCODERS.get("torchvision")(config)
    assert encoder.grid == (2, 2) and encoder.out_dim == 512
    assert torch.equal(encoder.backbone[0].weight, reference.conv1.weight)  # the file's weights, not a fresh init
    assert encoder(torch.rand(2, 1, 64, 64)).shape == (2, 4, 512)
    model = Captioner(config).eval()
    images, view_ids, view_mask = make_batch(2, size=64)
    assert model(images, view_ids, view_mask, torch.ones(2, 3, dtype=torch.long)).shape == (2, 3, VOCAB)


def test_hf_encoder_loads_a_local_model_directory(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    vit = transformers.ViTModel(
        transformers.ViTConfig(
            image_size=32,
            patch_size=8,
            num_channels=3,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
        )
    )
    vit.save_pretrained(tmp_path / "vit")
    for size, side in ((32, 4), (48, 6)):  # its own size, and another one (interpolated position embeddings)
        encoder = ENCODERS.get("hf")(tiny_config(encoder="hf", encoder_weights=str(tmp_path / "vit"), image_size=size))
        assert encoder.grid == (side, side) and encoder.out_dim == 32
        assert encoder(torch.rand(2, 1, size, size)).shape == (2, side * side, 32)  # class token dropped


def test_timm_encoder_if_installed() -> None:
    if importlib.util.find_spec("timm") is None:
        pytest.skip("timm is not installed")
    config = tiny_config(encoder="timm", encoder_name="resnet18", image_size=64)
    encoder = ENCODERS.get("timm")(config)
    assert encoder.grid == (2, 2)
    assert encoder(torch.rand(2, 1, 64, 64)).shape == (2, 4, encoder.out_dim)


@pytest.mark.parametrize("encoder,name", [("torchvision", "resnet18"), ("hf", "")])
def test_missing_encoder_weights_name_the_field(encoder: str, name: str, tmp_path: Path) -> None:
    config = tiny_config(encoder=encoder, encoder_name=name, encoder_weights=str(tmp_path / "nope.pth"))
    with pytest.raises(FileNotFoundError, match=r"model\.encoder_weights"):
        ENCODERS.get(encoder)(config)


# --- config ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"d_model": 30, "n_heads": 4}, "divisible by model.n_heads"),
        ({"image_size": 30}, "multiple of the conv"),
        ({"encoder": "vit", "image_size": 32, "patch_size": 6}, "multiple of model.patch_size"),
        ({"conv_channels": (8, 16), "conv_blocks": (1,)}, "same length"),
        ({"pad_id": VOCAB}, "outside the vocabulary"),
        ({"encoder": "torchvision", "encoder_name": ""}, "needs model.encoder_name"),
        ({"max_len": 1}, "max_len"),
    ],
)
def test_config_validation(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny_config(**fields)


def test_unknown_encoder_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="model.encoder") as err:
        tiny_config(encoder="convv")
    assert "Did you mean 'conv'" in str(err.value)
    for name in ("conv", "vit", "torchvision", "timm", "hf"):
        assert name in str(err.value)


def test_presets_are_valid_and_tiny_is_tiny() -> None:
    assert {"tiny", "small", "base"} <= set(CAPTIONER_SIZES)
    for fields in CAPTIONER_SIZES.values():
        CaptionerConfig(**fields)
    n_params = sum(p.numel() for p in Captioner(CaptionerConfig(**CAPTIONER_SIZES["tiny"])).parameters())
    assert 20_000 < n_params < 200_000
    for field in dataclasses.fields(CaptionerConfig):
        assert field.default is not dataclasses.MISSING, field.name


# --- model -----------------------------------------------------------------------------------------------------------


def test_forward_shapes_and_memory() -> None:
    model = make_model()
    images, view_ids, view_mask = make_batch(3)
    memory, memory_mask = model.encode(images, view_ids, view_mask)
    assert memory.shape == (3, 2 * 64, 32) and memory_mask.shape == (3, 128)
    assert memory_mask[1, :64].all() and not memory_mask[1, 64:].any()  # the absent lateral view is masked out
    ids = torch.randint(2, VOCAB, (3, 7))
    assert model(images, view_ids, view_mask, ids, torch.ones_like(ids)).shape == (3, 7, VOCAB)


def test_loss_backward_reaches_the_encoder() -> None:
    model = make_model().train()
    images, view_ids, view_mask = make_batch(4)
    ids = torch.randint(2, VOCAB, (4, 9))
    logits = model(images, view_ids, view_mask, ids[:, :-1], torch.ones_like(ids[:, :-1]))
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten()).backward()
    assert model.encoder.stem[0].weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.encoder.parameters())


def test_output_projection_is_tied_to_the_embedding() -> None:
    from medvl.train.optim import param_groups

    model = make_model()
    assert model.decoder.lm_head.weight is model.decoder.token_embed.weight
    decay, no_decay = param_groups(model, 0.1)
    assert any(p is model.decoder.token_embed.weight for p in no_decay["params"])
    assert not any(p is model.decoder.token_embed.weight for p in decay["params"])


def test_attention_mask_hides_padded_keys() -> None:
    model = make_model()
    batch = make_batch(2)
    ids = torch.randint(2, VOCAB, (2, 8))
    full = model(*batch, ids, torch.ones_like(ids))
    right = torch.ones_like(ids)
    right[0, 5:] = 0  # right padding: real positions are unchanged
    assert torch.allclose(model(*batch, ids, right)[0, :5], full[0, :5], atol=1e-6)
    hole = torch.ones_like(ids)
    hole[0, 2] = 0  # a masked token inside the sequence: what it holds must not reach the later positions
    other = ids.clone()
    other[0, 2] = (ids[0, 2] + 1) % VOCAB
    a, b = model(*batch, ids, hole), model(*batch, other, hole)
    assert torch.allclose(a[0, 3:], b[0, 3:], atol=1e-6) and torch.allclose(a[1], full[1], atol=1e-6)
    assert not torch.allclose(a[0, 3:], full[0, 3:], atol=1e-3)


def test_masked_view_pixels_do_not_matter() -> None:
    model = make_model()
    images, view_ids, view_mask = make_batch(3)
    view_mask[:, 1] = False
    other = images.clone()
    other[:, 1] = torch.rand_like(other[:, 1])
    ids = torch.randint(2, VOCAB, (3, 6))
    for mode in (model.eval, model.train):
        mode()
        torch.manual_seed(0)
        a = model(images, view_ids, view_mask, ids, torch.ones_like(ids))
        torch.manual_seed(0)
        b = model(other, view_ids, view_mask, ids, torch.ones_like(ids))
        assert torch.equal(a, b)
    model.eval()
    gen = {"bos_id": BOS, "eos_id": 3, "max_new_tokens": 8, "num_beams": 2}
    assert torch.equal(
        model.generate(images, view_ids, view_mask, **gen), model.generate(other, view_ids, view_mask, **gen)
    )
    view_mask[:, 1] = True  # and the same pixels do matter once the view is present
    assert not torch.equal(
        model(images, view_ids, view_mask, ids, torch.ones_like(ids)),
        model(other, view_ids, view_mask, ids, torch.ones_like(ids)),
    )


@pytest.mark.parametrize("capacity", [0, 12])
def test_kv_cache_matches_full_forward(capacity: int) -> None:
    """Both cache kinds: grown by concatenation (capacity 0) and preallocated buffers written in place."""
    model = make_model()
    memory, memory_mask = model.encode(*make_batch(3))
    decoder = model.decoder
    ids = torch.randint(2, VOCAB, (3, 10))
    with torch.no_grad():
        full, _ = decoder(ids, decoder.init_cache(memory, memory_mask))
        cache = decoder.init_cache(memory, memory_mask, capacity)
        head, cache = decoder(ids[:, :4], cache, 0)  # a prefix at once, then one token per step
        steps = [head]
        for t in range(4, 10):
            logits, cache = decoder(ids[:, t : t + 1], cache, t)
            steps.append(logits)
        assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)
        # Beams share their row's cross-attention cache; reordering keeps each beam's own history.
        k = 2
        beams = ids.repeat_interleave(k, 0)
        beams[1::2, 5:] = torch.randint(2, VOCAB, (3, 5))
        cache = decoder.init_cache(memory, memory_mask, capacity)
        _, cache = decoder(beams[:, :6], cache, 0)
        swap = torch.arange(3 * k).view(3, k).flip(1).flatten()  # exchange the two beams of every row
        cache = reorder_cache(cache, swap)
        step, _ = decoder(beams[swap, 6:7], cache, 6)
        expected, _ = decoder(
            beams[swap, :7], decoder.init_cache(memory.repeat_interleave(k, 0), memory_mask.repeat_interleave(k, 0))
        )
        assert torch.allclose(step[:, 0], expected[:, 6], atol=1e-5)
        if capacity:
            with pytest.raises(ValueError, match="cache holds"):
                decoder(ids[:, :1].repeat_interleave(k, 0), cache, capacity)


def test_beams_in_buffers_decode_like_beams_in_concatenated_caches() -> None:
    """Buffered beams keep keys/values where they were computed and reorder a mask over them; step by step, with
    reorders that move beams within their row, the logits equal those of the gathered (concatenating) cache."""
    model = make_model()
    memory, memory_mask = model.encode(*make_batch(3))
    decoder, k = model.decoder, 3
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        buffered = decoder.init_cache(memory, memory_mask, capacity=10)
        gathered = decoder.init_cache(memory, memory_mask)
        tokens = torch.full((3 * k, 1), BOS)
        for t in range(8):
            a, buffered = decoder(tokens, buffered, t)
            b, gathered = decoder(tokens, gathered, t)
            assert torch.allclose(a, b, atol=1e-5)
            index = (torch.arange(3)[:, None] * k + torch.randint(0, k, (3, k), generator=g)).flatten()
            buffered, gathered = reorder_cache(buffered, index), reorder_cache(gathered, index)
            tokens = torch.randint(2, VOCAB, (3 * k, 1), generator=g)
        # Each beam's history holds exactly one slot per position, and only slots of its own row exist at all.
        assert buffered.ancestry is not None
        assert (buffered.ancestry.view(3 * k, 10, k)[:, :8].sum(-1) == 1).all()


@pytest.mark.parametrize(
    "options", [{"num_beams": 2}, {"num_beams": 4, "no_repeat_ngram_size": 2}, {"num_beams": 3, "length_penalty": 0.0}]
)
def test_beam_search_with_buffers_equals_beam_search_with_concatenated_caches(options: dict) -> None:
    model = make_model()
    batch = make_batch(5)
    eos = common_eos(model, batch)
    memory, memory_mask = model.encode(*batch)

    def step(tokens: torch.Tensor, cache: object, position: int) -> tuple:
        logits, cache = model.decoder(tokens, cache, position)
        return logits[:, -1], cache

    common = {"bos_id": BOS, "eos_id": eos, "pad_id": PAD, "max_new_tokens": 12, **options}
    with torch.no_grad():
        gathered = beam_search(step, reorder_cache, model.decoder.init_cache(memory, memory_mask), 5, **common)
    generated = model.generate(*batch, **{k: v for k, v in common.items() if k != "pad_id"})
    assert (generated == eos).any()
    assert torch.equal(generated, gathered)


def test_buffers_take_the_dtype_of_the_keys_under_autocast() -> None:
    """Under bf16 autocast the key/value buffers are bf16, as the keys are: no cast of the whole history per step."""
    model = make_model()
    memory, memory_mask = model.encode(*make_batch(2))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        cache = model.decoder.init_cache(memory, memory_mask, capacity=6)
        logits, cache = model.decoder(torch.full((6, 1), BOS), cache, 0)
        logits, cache = model.decoder(torch.full((6, 1), BOS + 1), cache, 1)
    assert all(buffer.dtype == torch.bfloat16 for buffer in cache.self_kv)
    assert logits.shape == (6, 1, VOCAB) and torch.isfinite(logits).all()


def test_generation_under_cpu_autocast_decodes_in_fp32() -> None:
    """On a CPU the encoder keeps bf16 autocast and the decoding loop runs in fp32 (faster there): its ids are those
    of decoding the same autocast-encoded memory without autocast."""
    model = make_model()
    batch = make_batch(3)
    seen = []
    decoder_forward = model.decoder.forward

    def recording_forward(tokens, cache, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append((torch.is_autocast_enabled("cpu"), cache.memory.dtype))
        return decoder_forward(tokens, cache, *args, **kwargs)

    model.decoder.forward = recording_forward
    options = {"bos_id": BOS, "eos_id": common_eos(model, batch), "max_new_tokens": 8, "num_beams": 2}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ids = model.generate(*batch, **options)
        encoded = model.encode(*batch)
    assert seen and set(seen) == {(False, torch.float32)}
    model.encode = lambda *args: encoded
    assert torch.equal(ids, model.generate(*batch, **options))


def test_decoder_refuses_a_cache_out_of_step() -> None:
    model = make_model()
    memory, memory_mask = model.encode(*make_batch(2))
    cache = model.decoder.init_cache(memory, memory_mask, capacity=8)
    with torch.no_grad():
        _, cache = model.decoder(torch.full((4, 1), BOS), cache, 0)
        with pytest.raises(ValueError, match="starts at position 2"):
            model.decoder(torch.full((4, 1), BOS), cache, 2)
        with pytest.raises(ValueError, match="holds 4 rows"):
            model.decoder(torch.full((2, 1), BOS), cache, 1)
    with pytest.raises(ValueError, match="whole number of beams"):
        model.decoder(torch.full((3, 1), BOS), model.decoder.init_cache(memory, memory_mask), 0)


def test_decoder_refuses_positions_past_max_len() -> None:
    model = make_model()
    with pytest.raises(ValueError, match="max_len"):
        model(*make_batch(1), torch.ones(1, 25, dtype=torch.long))


# --- generation -------------------------------------------------------------------------------------------------------


def test_ban_repeated_ngrams() -> None:
    seqs = torch.tensor([[1, 5, 6, 5], [1, 2, 3, 4]])
    out = ban_repeated_ngrams(torch.zeros(2, 8), seqs, 2)
    assert out[0, 6] == float("-inf") and torch.isfinite(out[0, :6]).all() and torch.isfinite(out[0, 7])
    assert torch.isfinite(out[1]).all()
    assert torch.isinf(ban_repeated_ngrams(torch.zeros(2, 8), seqs, 1)[0, [1, 5, 6]]).all()


def test_greedy_equals_beam_search_with_one_beam() -> None:
    model = make_model()
    batch = make_batch(5)
    eos = common_eos(model, batch)
    greedy = model.generate(*batch, bos_id=BOS, eos_id=eos, max_new_tokens=12)
    memory, memory_mask = model.encode(*batch)

    def step(tokens: torch.Tensor, cache: object, position: int) -> tuple:
        logits, cache = model.decoder(tokens, cache, position)
        return logits[:, -1], cache

    with torch.no_grad():
        beam = beam_search(
            step,
            reorder_cache,
            model.decoder.init_cache(memory, memory_mask),
            5,
            bos_id=BOS,
            eos_id=eos,
            pad_id=PAD,
            max_new_tokens=12,
            num_beams=1,
        )
    assert (greedy == eos).any()
    assert torch.equal(greedy, beam)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_batched_generation_equals_per_row(num_beams: int) -> None:
    model = make_model()
    batch = make_batch(5)
    eos = common_eos(model, batch)
    gen = {"bos_id": BOS, "eos_id": eos, "max_new_tokens": 12, "num_beams": num_beams, "no_repeat_ngram_size": 3}
    together = model.generate(*batch, **gen)
    for row in range(5):
        alone = model.generate(*(t[row : row + 1] for t in batch), **gen)[0]
        width = len(alone)
        assert torch.equal(together[row, :width], alone)
        assert (together[row, width:] == PAD).all()


def test_beam_search_finds_a_sequence_at_least_as_likely_as_greedy() -> None:
    model = make_model()
    batch = make_batch(5)
    eos = common_eos(model, batch)
    greedy = model.generate(*batch, bos_id=BOS, eos_id=eos, max_new_tokens=10)
    beam = model.generate(*batch, bos_id=BOS, eos_id=eos, max_new_tokens=10, num_beams=4, length_penalty=0.0)
    gains = []
    with torch.no_grad():
        for row in range(5):
            g = sequence_logprob(model, batch, row, strip(greedy[row], eos))
            b = sequence_logprob(model, batch, row, strip(beam[row], eos))
            assert b >= g - 1e-4
            gains.append(b - g)
    assert max(gains) > 1e-3  # beam search did find something better somewhere


def test_beam_search_with_kv_cache_equals_recomputing_every_prefix() -> None:
    model = make_model()
    batch = make_batch(4)
    eos = common_eos(model, batch)
    memory, memory_mask = model.encode(*batch)
    k = 3

    def step(tokens: torch.Tensor, history: torch.Tensor, position: int) -> tuple:
        history = torch.cat([history, tokens], dim=1)  # the "cache" is the token history: no KV reuse at all
        cache = model.decoder.init_cache(memory.repeat_interleave(k, 0), memory_mask.repeat_interleave(k, 0))
        return model.decoder(history, cache)[0][:, -1], history

    with torch.no_grad():
        reference = beam_search(
            step,
            lambda history, index: history[index],
            torch.empty(4 * k, 0, dtype=torch.long),
            4,
            bos_id=BOS,
            eos_id=eos,
            pad_id=PAD,
            max_new_tokens=12,
            num_beams=k,
        )
    assert torch.equal(model.generate(*batch, bos_id=BOS, eos_id=eos, max_new_tokens=12, num_beams=k), reference)


def test_no_repeat_ngram_size_two_has_no_repeated_bigram() -> None:
    model = make_model()
    batch = make_batch(4)
    free = model.generate(*batch, bos_id=BOS, eos_id=VOCAB + 7, max_new_tokens=20)

    def has_repeat(row: list[int]) -> bool:
        bigrams = list(zip(row, row[1:]))
        return len(bigrams) != len(set(bigrams))

    assert any(has_repeat([BOS, *r]) for r in free.tolist())  # the test means something: this model repeats
    for beams in (1, 3):
        out = model.generate(
            *batch, bos_id=BOS, eos_id=VOCAB + 7, max_new_tokens=20, num_beams=beams, no_repeat_ngram_size=2
        )
        assert out.shape == (4, 20)
        assert not any(has_repeat([BOS, *r]) for r in out.tolist())


@pytest.mark.parametrize("num_beams", [1, 3])
def test_generation_respects_max_new_tokens_and_max_len(num_beams: int) -> None:
    model = make_model()
    batch = make_batch(3)
    never = VOCAB + 7  # out of the vocabulary: no row ever finishes
    assert model.generate(*batch, bos_id=BOS, eos_id=never, max_new_tokens=5, num_beams=num_beams).shape == (3, 5)
    long = model.generate(*batch, bos_id=BOS, eos_id=never, max_new_tokens=500, num_beams=num_beams)
    assert long.shape == (3, model.config.max_len - 1)  # BOS + generated == max_len


@pytest.mark.parametrize("num_beams", [1, 3])
def test_rows_end_with_eos_then_padding(num_beams: int) -> None:
    model = make_model()
    batch = make_batch(5)
    eos = common_eos(model, batch)
    out = model.generate(*batch, bos_id=BOS, eos_id=eos, max_new_tokens=12, num_beams=num_beams)
    lengths = []
    for row in out:
        hits = (row == eos).nonzero()
        assert len(hits) or len(row) == 12  # unfinished rows ran to max_new_tokens
        end = int(hits[0]) + 1 if len(hits) else len(row)
        assert (row[end:] == PAD).all()
        lengths.append(end)
    assert min(lengths) < max(lengths)  # rows finished at different times in one batch


def test_generate_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_beams"):
        generate(
            lambda t, c, p: (t, c), reorder_cache, None, 1, bos_id=1, eos_id=2, pad_id=0, max_new_tokens=3, num_beams=0
        )
