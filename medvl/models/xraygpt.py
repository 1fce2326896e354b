"""The XrayGPT family: vision encoder -> bridge (Q-Former or MLP) -> causal LLM (MiniGPT-4 on chest X-rays).

Contract: `XrayGPT(config)` is an `nn.Module` with
- `encode_images(images [B, V, C, H, W], view_ids, view_mask) -> [B, Q, d_llm]`: every present view through the
  vision encoder (any entry of `medvl.models.encoders.ENCODERS`: conv, vit, torchvision, timm, hf, from local weights
  or random init), a LayerNorm (`ln_vision`), a view embedding; then the `bridge` into the LLM's embedding width:
  `qformer` (BLIP-2's Q-Former, HF's `Blip2QFormerModel`: `num_query_tokens` learned queries cross-attending to the
  tokens of all views, then `proj`, linear as XrayGPT's `llama_proj` or a 2-layer MLP), `mlp` (LLaVA-1.5: every patch
  token of every view through a 2-layer GELU MLP, `proj`; with `merge_size` m, each m x m block of neighbouring
  patches first becomes one token, as in Qwen2-VL) or `linear` (LLaVA-1: one linear layer per token);
- `forward(images, view_ids, view_mask, input_ids, attention_mask, image_mask) -> logits [B, T, vocab]`: the token
  embeddings of `input_ids` with the positions where `image_mask` is True replaced, in order, by the image
  embeddings (each row has exactly Q such positions);
- `generate_from(images, ..., input_ids, attention_mask, image_mask, **generation)`: left-padded prompts in, new
  token ids out (HF `generate` on `inputs_embeds`).

The LLM is any HF causal LM: from a local directory (`llm_path`, e.g. Vicuna/Llama, Mistral, Qwen, GPT-2) or a
random config of `llm_arch` (llama or gpt2) at the preset's size. Parts freeze independently (frozen parts stay in
eval mode); LoRA on the LLM (and optionally the vision encoder) comes from peft; `gradient_checkpointing` asks the
LLM to recompute activations; `llm_quantization` 8bit/4bit loads the LLM through bitsandbytes, which needs CUDA and
says so otherwise. Nothing is downloaded.

With `qformer_text` the Q-Former also has BLIP-2's text side, for its first-stage pretraining (task
qformer_pretraining, `medvl.models.qformer_text`); `init_state` leaves that side out when a report model starts from
such a checkpoint (train.init_from).

Checkpoints: `checkpoint_state(state)` leaves out the frozen weights that came from `llm_path` / `encoder_weights`
(LoRA adapters, the projection and anything trained stay), unless `save_frozen_pretrained`; `load_checkpoint_state`
loads a state saved that way on top of the model rebuilt from the same paths. Configs written before `bridge`
existed (`qformer: true|false`) read as the same bridge (`upgrade_fields`), and their weights keep their names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from medvl.models.conversation import ConversationTemplate
from medvl.models.encoders import ENCODERS, check_encoder_fields, normalize_images
from medvl.models.qformer_text import QFormerTextSide

N_VIEW_TYPES = 2
LLM_ARCHS = ("llama", "gpt2")
BRIDGES = ("qformer", "mlp", "linear")
_QFORMER_TEXT_FFN = re.compile(r"^qformer\.encoder\.layer\.\d+\.(intermediate|output)\.")


@dataclass
class XrayGPTConfig:
    # --------------------------------------------------------------------------------------------- images
    image_size: int = 224
    """Side of the square input images, in pixels."""
    in_chans: int = 1
    """Image channels (1 for grayscale X-rays; third-party encoders get it repeated to their channel count)."""
    image_mean: float = 0.5
    image_std: float = 0.25
    max_views: int = 2
    """Images per study; their tokens are concatenated (with a view embedding) before the Q-Former."""
    channel_mean: tuple[float, ...] = ()
    """Per-channel pixel mean (one value per model.in_chans), overriding image_mean; empty = read from the pretrained
    encoder's preprocessing config (HF preprocessor_config.json, timm pretrained_cfg) when it has one."""
    channel_std: tuple[float, ...] = ()
    """Per-channel pixel std matching channel_mean."""
    # --------------------------------------------------------------------------------------- vision encoder
    encoder: str = "vit"
    """Vision encoder, a name in `medvl.models.encoders.ENCODERS`: conv, vit, torchvision, timm, hf (an HF vision
    model directory such as ViT, CLIP, SigLIP or DINOv2 in encoder_weights; a timm model such as EVA by name)."""
    encoder_name: str = ""
    encoder_weights: str = ""
    """Local weights of the vision encoder (file, or directory for hf); empty = random init."""
    conv_channels: tuple[int, ...] = (32, 64, 128, 192)
    conv_blocks: tuple[int, ...] = (1, 1, 1, 1)
    patch_size: int = 16
    vit_dim: int = 384
    vit_depth: int = 6
    vit_heads: int = 6
    ffn_mult: int = 4
    """encoder=vit: MLP width as a multiple of vit_dim."""
    dropout: float = 0.0
    freeze_vision: bool = True
    """Freeze the vision side: encoder, ln_vision and the position / view embeddings added to its tokens."""
    vision_lora: bool = False
    """Also put LoRA adapters on the vision encoder's linear layers (needs lora_r > 0)."""
    # --------------------------------------------------------------------------------------------- bridge
    bridge: str = "qformer"
    """How the image tokens reach the LLM: qformer (BLIP-2 / XrayGPT: num_query_tokens learned queries cross-attend
    to the tokens of all views, then `projection`), mlp (LLaVA-1.5: a 2-layer GELU MLP on every patch token of every
    view; the LLM sees max_views x grid tokens) or linear (LLaVA-1: one linear layer per token)."""
    merge_size: int = 1
    """bridge=mlp or linear: concatenate the features of each merge_size x merge_size block of neighbouring patches
    into one token before the projection (Qwen2-VL's patch merger, InternVL's pixel shuffle): merge_size^2 times
    fewer image tokens for the LLM, no feature dropped. 1 = one token per patch (LLaVA). The encoder's grid must be
    divisible by it. bridge=qformer ignores it (its queries read every patch token), so a recipe can switch bridges
    with one override."""
    num_query_tokens: int = 32
    qformer_dim: int = 768
    qformer_depth: int = 12
    qformer_heads: int = 12
    cross_attention_frequency: int = 2
    """A cross-attention to the image in every N-th Q-Former layer (BLIP-2 uses 2)."""
    qformer_dropout: float = 0.1
    """Dropout inside the Q-Former (BLIP-2's 0.1)."""
    freeze_qformer: bool = False
    qformer_text: bool = False
    """Give the Q-Former BLIP-2's text side (embeddings, text feed-forward blocks, ITC/ITM/LM heads) for its
    first-stage objectives (task qformer_pretraining, which turns it on); report training never runs it, and a report
    model initialized from such a checkpoint (train.init_from) leaves it out."""
    projection: str = "linear"
    """bridge=qformer: the projection of the query outputs into the LLM, linear (XrayGPT's llama_proj) or mlp (two
    layers with GELU)."""
    # ------------------------------------------------------------------------------------------------ LLM
    llm_path: str = ""
    """Local directory of an HF causal LM (config.json + weights); empty = random init of llm_arch."""
    llm_arch: str = "llama"
    """Architecture of a random-init LLM: llama or gpt2."""
    llm_dim: int = 512
    llm_depth: int = 4
    llm_heads: int = 8
    llm_ffn: int = 1376
    freeze_llm: bool = True
    lora_r: int = 0
    """LoRA rank on the LLM's attention projections (0 = no LoRA)."""
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(default_factory=list)
    """Module names to adapt; empty = q_proj/v_proj (Llama-like) or c_attn (GPT-2)."""
    gradient_checkpointing: bool = False
    llm_quantization: str = "none"
    """none, 8bit or 4bit (bitsandbytes; CUDA only)."""
    llm_dtype: str = "float32"
    """float32, bfloat16 or float16 for a pretrained LLM."""
    save_frozen_pretrained: bool = False
    """Also store frozen weights loaded from llm_path / encoder_weights in every checkpoint (large)."""
    # ------------------------------------------------------------------------------------------ text side
    max_len: int = 160
    """Longest answer (report) in tokens, BOS and EOS included."""
    max_prompt_tokens: int = 96
    """Longest prompt text in tokens (instruction and chat history), without the image."""
    template: ConversationTemplate = field(default_factory=ConversationTemplate)
    vocab_size: int = 1200
    """Tokenizer vocabulary size (set from the tokenizer at training time; a pretrained LLM's is checked)."""
    pad_id: int = 0

    def __post_init__(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        check_encoder_fields(self)
        if isinstance(self.template, dict):
            self.template = ConversationTemplate(**self.template)
        check(
            self.llm_arch in LLM_ARCHS, f"model.llm_arch must be one of {', '.join(LLM_ARCHS)}, got {self.llm_arch!r}"
        )
        check(self.bridge in BRIDGES, f"model.bridge must be one of {', '.join(BRIDGES)}, got {self.bridge!r}")
        check(self.projection in ("linear", "mlp"), f"model.projection must be linear or mlp, got {self.projection!r}")
        check(
            self.llm_quantization in ("none", "8bit", "4bit"),
            f"model.llm_quantization must be none, 8bit or 4bit, got {self.llm_quantization!r}",
        )
        check(
            self.llm_dtype in ("float32", "bfloat16", "float16"),
            f"model.llm_dtype must be float32, bfloat16 or float16, got {self.llm_dtype!r}",
        )
        check(
            self.num_query_tokens >= 1 and self.max_views >= 1 and self.max_len >= 2,
            "model.num_query_tokens and model.max_views must be >= 1 and model.max_len >= 2",
        )
        check(self.lora_r >= 0, f"model.lora_r must be >= 0, got {self.lora_r}")
        check(not self.vision_lora or self.lora_r > 0, "model.vision_lora needs model.lora_r > 0")
        check(not self.qformer_text or self.bridge == "qformer", "model.qformer_text needs model.bridge=qformer")
        check(self.merge_size >= 1, f"model.merge_size must be >= 1, got {self.merge_size}")
        if self.bridge == "qformer":
            check(
                self.qformer_dim % self.qformer_heads == 0,
                f"model.qformer_dim={self.qformer_dim} must be divisible by model.qformer_heads={self.qformer_heads}",
            )
        if not self.llm_path:
            check(
                self.llm_dim % self.llm_heads == 0,
                f"model.llm_dim={self.llm_dim} must be divisible by model.llm_heads={self.llm_heads}",
            )


XRAYGPT_SIZES: dict[str, dict[str, Any]] = {
    # Unit tests: a 4x4-patch ViT, a 2-layer Q-Former with 4 queries and a 2-layer Llama, all random.
    "tiny": {
        "image_size": 32,
        "encoder": "vit",
        "patch_size": 8,
        "vit_dim": 32,
        "vit_depth": 2,
        "vit_heads": 2,
        "num_query_tokens": 4,
        "qformer_dim": 32,
        "qformer_depth": 2,
        "qformer_heads": 2,
        "llm_dim": 64,
        "llm_depth": 2,
        "llm_heads": 4,
        "llm_ffn": 128,
        "max_len": 64,
        "max_prompt_tokens": 48,
    },
    # CPU-trainable end to end on the synthetic set: the conv encoder of the captioner, 16 queries, a 4-layer Llama.
    "small": {
        "image_size": 128,
        "encoder": "conv",
        "freeze_vision": False,
        "num_query_tokens": 16,
        "qformer_dim": 192,
        "qformer_depth": 2,
        "qformer_heads": 4,
        "cross_attention_frequency": 1,
        "llm_dim": 256,
        "llm_depth": 4,
        "llm_heads": 4,
        "llm_ffn": 688,
        "freeze_llm": False,
    },
    # XrayGPT's shape with weights the user brings: ViT-g/EVA-like encoder and a 7B LLM from local directories.
    "base": {
        "image_size": 224,
        "num_query_tokens": 32,
        "qformer_dim": 768,
        "qformer_depth": 12,
        "qformer_heads": 12,
        "cross_attention_frequency": 2,
        "freeze_vision": True,
        "freeze_qformer": True,
        "freeze_llm": True,
    },
}


def upgrade_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Model fields of an older config (a checkpoint's, or a recipe's) in today's names: `qformer: true|false` became
    `bridge` (true -> qformer; false fed the tokens through `projection`, i.e. bridge mlp or linear)."""
    if "qformer" not in fields:
        return fields
    fields = dict(fields)
    if fields.pop("qformer"):
        fields.setdefault("bridge", "qformer")
    else:
        fields.setdefault("bridge", "mlp" if fields.get("projection") == "mlp" else "linear")
    return fields


def config_for_reload(config: XrayGPTConfig) -> XrayGPTConfig:
    """Rebuilding from a checkpoint: a torchvision/timm encoder's weights are in it unless they were left out as
    frozen pretrained weights, in which case the original file is needed again."""
    return config


def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def build_llm(config: XrayGPTConfig) -> nn.Module:
    """The causal LM: from `llm_path` (offline) or a random config of `llm_arch`."""
    import transformers

    if config.llm_path:
        path = Path(config.llm_path).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"model.llm_path: {str(path)!r} is not an HF model directory (no config.json); "
                "give a local copy of the LLM (e.g. a Vicuna-7B folder) or leave it empty for a "
                "random model"
            )
        kwargs: dict[str, Any] = {"local_files_only": True, "dtype": _dtype(config.llm_dtype)}
        if config.llm_quantization != "none":
            if not torch.cuda.is_available():
                raise RuntimeError(
                    f"model.llm_quantization={config.llm_quantization} needs a CUDA GPU (bitsandbytes); "
                    "this machine has none: use llm_quantization=none"
                )
            try:
                import bitsandbytes  # noqa: F401
                from transformers import BitsAndBytesConfig
            except ImportError:
                raise RuntimeError("model.llm_quantization needs bitsandbytes: pip install bitsandbytes") from None
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_8bit=config.llm_quantization == "8bit", load_in_4bit=config.llm_quantization == "4bit"
            )
        return transformers.AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    if config.llm_arch == "gpt2":
        cfg = transformers.GPT2Config(
            vocab_size=config.vocab_size,
            n_embd=config.llm_dim,
            n_layer=config.llm_depth,
            n_head=config.llm_heads,
            n_inner=config.llm_ffn,
            n_positions=config.max_len + config.max_prompt_tokens + 4 * config.num_query_tokens,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )
        return transformers.GPT2LMHeadModel(cfg)
    cfg = transformers.LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.llm_dim,
        intermediate_size=config.llm_ffn,
        num_hidden_layers=config.llm_depth,
        num_attention_heads=config.llm_heads,
        num_key_value_heads=config.llm_heads,
        max_position_embeddings=config.max_len + config.max_prompt_tokens + 1024,
        tie_word_embeddings=False,
        pad_token_id=config.pad_id,
    )
    return transformers.LlamaForCausalLM(cfg)


def _lora_targets(module: nn.Module, wanted: list[str]) -> list[str]:
    if wanted:
        return wanted
    names = {name.rsplit(".", 1)[-1] for name, _ in module.named_modules()}
    for candidates in (["q_proj", "v_proj"], ["c_attn"], ["query", "value"], ["qkv"]):
        if all(c in names for c in candidates):
            return candidates
    raise ValueError("cannot pick LoRA target modules for this model: set model.lora_targets")


def _freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


class XrayGPT(nn.Module):
    """See the module docstring."""

    def __init__(self, config: XrayGPTConfig) -> None:
        super().__init__()
        from peft import LoraConfig, get_peft_model
        from transformers import Blip2QFormerConfig, Blip2QFormerModel

        self.config = config
        self.encoder = ENCODERS.get(config.encoder)(config)
        d_vision = self.encoder.out_dim
        self.ln_vision = nn.LayerNorm(d_vision)
        self.view_embed = nn.Embedding(N_VIEW_TYPES, d_vision)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.encoder.grid[0] * self.encoder.grid[1], d_vision))
        nn.init.normal_(self.view_embed.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.02)
        if config.bridge == "qformer":
            qcfg = Blip2QFormerConfig(
                hidden_size=config.qformer_dim,
                num_hidden_layers=config.qformer_depth,
                num_attention_heads=config.qformer_heads,
                intermediate_size=4 * config.qformer_dim,
                encoder_hidden_size=d_vision,
                cross_attention_frequency=config.cross_attention_frequency,
                hidden_dropout_prob=config.qformer_dropout,
                attention_probs_dropout_prob=config.qformer_dropout,
                use_qformer_text_input=config.qformer_text,
            )
            self.qformer = Blip2QFormerModel(qcfg)
            self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens, config.qformer_dim))
            nn.init.normal_(self.query_tokens, std=0.02)
            d_in = config.qformer_dim
        else:
            m = config.merge_size
            if self.encoder.grid[0] % m or self.encoder.grid[1] % m:
                raise ValueError(
                    f"model.merge_size={m} does not divide the encoder's {self.encoder.grid[0]}x{self.encoder.grid[1]} "
                    "patch grid: pick a divisor of it (or change model.image_size)"
                )
            self.qformer, self.query_tokens, d_in = None, None, d_vision * m * m
        self.qformer_text = (
            QFormerTextSide(config.qformer_dim, config.vocab_size, config.max_len, config.pad_id)
            if config.qformer_text
            else None
        )
        self.llm = build_llm(config)
        d_llm = self.llm.get_input_embeddings().embedding_dim
        n_vocab = self.llm.get_input_embeddings().num_embeddings
        if n_vocab < config.vocab_size:
            raise ValueError(
                f"the LLM has {n_vocab} token embeddings but the tokenizer {config.vocab_size} tokens: "
                "use the LLM's own tokenizer (tokenizer.path = model.llm_path)"
            )
        projection = config.projection if config.bridge == "qformer" else config.bridge
        # Module names as before the `bridge` field (proj.weight, or proj.0/proj.2): older checkpoints load as they are.
        self.proj = (
            nn.Linear(d_in, d_llm)
            if projection == "linear"
            else nn.Sequential(nn.Linear(d_in, d_llm), nn.GELU(), nn.Linear(d_llm, d_llm))
        )

        if config.freeze_vision:  # the vision side as a whole, as MiniGPT-4 freezes ln_vision with the ViT
            for part in (self.encoder, self.ln_vision, self.view_embed):
                _freeze(part)
            self.pos_embed.requires_grad_(False)
        if config.freeze_qformer and self.qformer is not None:
            _freeze(self.qformer)
            self.query_tokens.requires_grad_(False)
        if config.freeze_llm:
            _freeze(self.llm)
        if config.lora_r > 0:
            lora = LoraConfig(
                r=config.lora_r,
                lora_alpha=config.lora_alpha,
                lora_dropout=config.lora_dropout,
                target_modules=_lora_targets(self.llm, config.lora_targets),
                bias="none",
            )
            self.llm = get_peft_model(self.llm, lora)
            if config.vision_lora:
                self.encoder = get_peft_model(
                    self.encoder,
                    LoraConfig(
                        r=config.lora_r,
                        lora_alpha=config.lora_alpha,
                        lora_dropout=config.lora_dropout,
                        target_modules=_lora_targets(self.encoder, []),
                        bias="none",
                    ),
                )
        hf_parts: tuple[tuple[str, Any], ...] = (("llm", self.llm), ("qformer", self.qformer))
        self._built_attention = {
            name: part.config._attn_implementation
            for name, part in hf_parts
            if part is not None and hasattr(part, "set_attn_implementation")
        }
        """The attention kernel each HF part was built with, restored off the CPU (see `_use_attention_for`)."""
        if config.gradient_checkpointing and hasattr(self.llm, "gradient_checkpointing_enable"):
            self.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if hasattr(self.llm, "enable_input_require_grads"):
                self.llm.enable_input_require_grads()

    # ------------------------------------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> XrayGPT:
        super().train(mode)
        # Frozen parts never train: no dropout, no statistics updates.
        for frozen, part in (
            (self.config.freeze_vision and not self.config.vision_lora, self.encoder),
            (self.config.freeze_qformer, self.qformer),
            (self.config.freeze_llm and self.config.lora_r == 0, self.llm),
        ):
            if frozen and part is not None:
                part.eval()
        return self

    # ----------------------------------------------------------------------------------------------- images
    def vision_tokens(self, images: Tensor, view_ids: Tensor, view_mask: Tensor) -> tuple[Tensor, Tensor]:
        """The tokens of all views [B, V * P, D] (P patches per view) and their mask [B, V * P], True where a token
        belongs to a present view (a study without images keeps all True, so attention has something to read)."""
        b, v = view_mask.shape
        view_mask = view_mask.bool()
        x = normalize_images(images[view_mask], self.config)
        tokens = self.ln_vision(self.encoder(x) + self.pos_embed)  # [n_present, P, D]
        p, d = tokens.shape[1], tokens.shape[2]
        feats = tokens.new_zeros(b, v, p, d).index_put((view_mask,), tokens)
        feats = (feats + self.view_embed(view_ids.clamp(0, N_VIEW_TYPES - 1))[:, :, None, :]).flatten(1, 2)
        mask = view_mask[:, :, None].expand(b, v, p).reshape(b, v * p)
        return feats, mask | ~mask.any(dim=1, keepdim=True)

    def query_outputs(self, feats: Tensor, mask: Tensor) -> Tensor:
        """bridge=qformer: the Q-Former's outputs [B, num_query_tokens, qformer_dim] for `vision_tokens`."""
        queries = self.query_tokens.expand(feats.shape[0], -1, -1)
        return self.qformer(
            query_embeds=queries, encoder_hidden_states=feats, encoder_attention_mask=mask.long()
        ).last_hidden_state

    def merge_tokens(self, feats: Tensor) -> Tensor:
        """bridge=mlp/linear: [B, V * h * w, D] vision tokens -> [B, V * (h/m) * (w/m), m * m * D], each m x m block of
        neighbouring patches of a view (m = merge_size) concatenated, row-major within the block."""
        m = self.config.merge_size
        if m == 1:
            return feats
        (h, w), d = self.encoder.grid, feats.shape[-1]
        x = feats.view(feats.shape[0], -1, h // m, m, w // m, m, d).permute(0, 1, 2, 4, 3, 5, 6)
        return x.reshape(feats.shape[0], -1, m * m * d)

    def encode_images(self, images: Tensor, view_ids: Tensor, view_mask: Tensor) -> Tensor:
        """[B, Q, d_llm] image embeddings for the LLM (Q = num_query_tokens, or the (merged) tokens of all views)."""
        feats, mask = self.vision_tokens(images, view_ids, view_mask)
        return self.proj(self.merge_tokens(feats) if self.qformer is None else self.query_outputs(feats, mask))

    @property
    def n_image_tokens(self) -> int:
        if self.qformer is not None:
            return self.config.num_query_tokens
        return self.config.max_views * self.encoder.grid[0] * self.encoder.grid[1] // self.config.merge_size**2

    def _use_attention_for(self, device: torch.device) -> None:
        """HF's eager attention (matmul + softmax) in the LLM and the Q-Former on a CPU, the kernel they were built
        with elsewhere. Why: torch's SDPA kernel in bf16 on a CPU made a training step of `xraygpt_tiny_synthetic`
        6x slower (1.08 s against 0.17 s, same steps alternating; in fp32 0.31 s against 0.28 s)."""
        for name, built in self._built_attention.items():
            part: Any = getattr(self, name)
            wanted = "eager" if device.type == "cpu" else built
            if part.config._attn_implementation != wanted:
                part.set_attn_implementation(wanted)

    def _embed(
        self, images: Tensor, view_ids: Tensor, view_mask: Tensor, input_ids: Tensor, image_mask: Tensor
    ) -> Tensor:
        self._use_attention_for(input_ids.device)
        embed = self.llm.get_input_embeddings()
        inputs = embed(input_ids.masked_fill(image_mask, 0))
        image = self.encode_images(images, view_ids, view_mask).to(inputs.dtype)
        if int(image_mask.sum()) != image.shape[0] * image.shape[1]:
            raise ValueError(
                f"image_mask marks {int(image_mask.sum())} positions but there are "
                f"{image.shape[0]} x {image.shape[1]} image embeddings"
            )
        return inputs.masked_scatter(image_mask[..., None], image)

    def forward(
        self,
        images: Tensor,
        view_ids: Tensor,
        view_mask: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor,
        image_mask: Tensor,
    ) -> Tensor:
        """Next-token logits [B, T, vocab] of the spliced sequence (see the module docstring)."""
        inputs = self._embed(images, view_ids, view_mask, input_ids, image_mask)
        return self.llm(inputs_embeds=inputs, attention_mask=attention_mask, use_cache=False).logits

    @torch.no_grad()
    def generate_from(
        self,
        images: Tensor,
        view_ids: Tensor,
        view_mask: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor,
        image_mask: Tensor,
        **generation: Any,
    ) -> Tensor:
        """New token ids [B, L] after left-padded prompts (HF generate arguments in `generation`)."""
        inputs = self._embed(images, view_ids, view_mask, input_ids, image_mask)
        return self.llm.generate(inputs_embeds=inputs, attention_mask=attention_mask, **generation)

    # ------------------------------------------------------------------------------------------ checkpoints
    def _pretrained_frozen_prefixes(self) -> list[str]:
        c = self.config
        prefixes = []
        if c.llm_path and c.freeze_llm:
            prefixes.append("llm.")
        if c.encoder_weights and c.freeze_vision:
            prefixes.append("encoder.")
        return prefixes

    def init_state(self, state: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
        """(the part of `state` this model uses, the keys dropped) for train.init_from: a report model started from a
        Q-Former pretraining run leaves out the Q-Former's text side."""
        if self.qformer_text is not None:
            return state, []
        dropped = [k for k in state if k.startswith("qformer_text.") or _QFORMER_TEXT_FFN.match(k)]
        return {k: v for k, v in state.items() if k not in set(dropped)}, dropped

    def _left_out(self, key: str, prefixes: list[str]) -> bool:
        return any(key.startswith(p) for p in prefixes) and "lora_" not in key

    def checkpoint_state(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """The state to store: without frozen pretrained weights (rebuilt from their paths) unless asked."""
        if self.config.save_frozen_pretrained:
            return state
        prefixes = self._pretrained_frozen_prefixes()
        return {k: v for k, v in state.items() if not self._left_out(k, prefixes)}

    def load_checkpoint_state(self, state: dict[str, Tensor]) -> None:
        """Load a `checkpoint_state`: every key the model has must be there, except the left-out frozen weights."""
        missing, unexpected = self.load_state_dict(state, strict=False)
        prefixes = self._pretrained_frozen_prefixes()
        missing = [k for k in missing if not self._left_out(k, prefixes)]
        if missing or unexpected:
            raise KeyError(f"checkpoint does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


__all__ = [
    "BRIDGES",
    "LLM_ARCHS",
    "XRAYGPT_SIZES",
    "XrayGPT",
    "XrayGPTConfig",
    "build_llm",
    "config_for_reload",
    "trainable_parameters",
    "upgrade_fields",
]
