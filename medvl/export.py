"""`medvl export`: a checkpoint as a Hugging Face-style folder that medvl loads back, and pushing it to the Hub.

Contract of `export_hf(checkpoint, out_dir)`: writes, in HF conventions,
    model.safetensors         the weights predict uses (EMA when the run kept it), tied weights stored once
    config.json               model_type "medvl_<family>", sizes under HF names (hidden_size, vocab_size...), the
                              token ids, tie_word_embeddings, and medvl's full experiment config under "medvl_config"
    generation_config.json    beam/sampling settings and token ids
    preprocessor_config.json  image size, mean/std, grayscale, view order
    tokenizer.json + tokenizer_config.json (+ special_tokens_map.json)   loadable with AutoTokenizer
    README.md                 a model card
`load_trained` accepts the folder (`is_hf_export`, `read_hf_export`), so predict/serve/demo run from it. It is not a
`transformers` architecture: AutoModel cannot build it without medvl, on purpose (no remote code is ever run).

`push_to_hub(folder, repo_id)` uploads with huggingface_hub, and never hangs offline: with HF_HUB_OFFLINE=1, no
reachable endpoint (checked with a short timeout first) or no token it raises `HubUnavailableError` with what to do.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from safetensors.torch import save_file

HF_EXPORT_FORMAT = "medvl-hf/1"
HUB_PROBE_SECONDS = 5.0


class HubUnavailableError(ValueError):
    """The Hub cannot be used now (offline mode, no network, no token, or a refused upload)."""


def is_hf_export(path: Path) -> bool:
    """Whether `path` is a folder written by `export_hf`."""
    try:
        return json.loads((path / "config.json").read_text()).get("medvl_format") == HF_EXPORT_FORMAT
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def _hf_config(cfg: Any, family_task: str, tokenizer: Any, aliases: dict[str, str], meta: dict[str, Any]) -> dict:
    import medvl

    mc = cfg.model
    return {
        "model_type": f"medvl_{cfg.model_family}", "architectures": [f"Medvl{cfg.model_family.title()}"],
        "medvl_format": HF_EXPORT_FORMAT, "medvl_version": medvl.__version__, "library_name": "medvl",
        "task": family_task, "size": cfg.model_size,
        "vocab_size": mc.vocab_size, "hidden_size": mc.d_model, "num_hidden_layers": mc.n_layers,
        "num_attention_heads": mc.n_heads, "max_position_embeddings": mc.max_len, "image_size": mc.image_size,
        "num_channels": mc.in_chans, "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id, "tie_word_embeddings": bool(aliases), "torch_dtype": "float32",
        "medvl_tied_weights": aliases, "medvl_config": cfg.to_dict(),
        "medvl_source": {"step": meta.get("step"), "metrics": meta.get("metrics", {}), "kind": meta.get("kind"),
                         "versions": meta.get("versions", {})},
    }


def _model_card(cfg: Any, step: Any) -> str:
    return f"""---
library_name: medvl
pipeline_tag: image-to-text
tags: [medvl, medical-imaging, chest-x-ray, report-generation]
---
# medvl {cfg.model_family} ({cfg.model_size})

A chest X-ray report generator exported by `medvl export` (step {step}). It loads with medvl only:

```bash
medvl predict THIS_FOLDER frontal.dcm lateral.dcm
medvl serve THIS_FOLDER
```

Inputs: {cfg.model.max_views} view(s) per study (frontal first), grayscale, resized to {cfg.model.image_size} px.
Trained on `{cfg.data.source}` data; outputs are research artifacts, not clinical advice.
"""


def export_hf(checkpoint: str | Path, out_dir: str | Path, use_ema: bool = True, overwrite: bool = False) -> Path:
    """Write `checkpoint` as an HF-style folder; see the module docstring.

    Args:
        checkpoint: a checkpoint or run directory (anything `load_trained` accepts).
        out_dir: the folder to write (must not exist, or be empty, unless `overwrite`).
        use_ema: export the EMA weights when the run kept them (what predict uses).
        overwrite: replace an existing non-empty `out_dir`.

    Raises:
        FileExistsError: out_dir is not empty and overwrite is False.
    """
    from medvl.infer.predictor import load_trained
    from medvl.models.families import MODEL_FAMILIES
    from medvl.train.checkpoint import _dedupe

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty: choose a new folder or pass --overwrite")
    loaded = load_trained(checkpoint, device="cpu", use_ema=use_ema)
    cfg = loaded.config
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors, aliases = _dedupe(loaded.model.state_dict())
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    task = MODEL_FAMILIES.get(cfg.model_family).task
    (tmp / "config.json").write_text(json.dumps(_hf_config(cfg, task, loaded.tokenizer, aliases, loaded.metadata),
                                                indent=1))
    gen = dataclasses.asdict(cfg.generation)
    tok = loaded.tokenizer
    (tmp / "generation_config.json").write_text(json.dumps({
        **{k: gen[k] for k in ("num_beams", "max_new_tokens", "no_repeat_ngram_size", "length_penalty", "do_sample",
                               "temperature", "top_p", "top_k")},
        "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id,
        "decoder_start_token_id": tok.bos_token_id}, indent=1))
    mc = cfg.model
    (tmp / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "MedvlXrayImageProcessor", "do_resize": True,
        "size": {"height": mc.image_size, "width": mc.image_size}, "resample": "box (shrink) / bilinear (enlarge)",
        "do_rescale": True, "rescale_factor": 1 / 255, "image_mean": [mc.image_mean] * mc.in_chans,
        "image_std": [mc.image_std] * mc.in_chans, "num_channels": mc.in_chans, "max_views": mc.max_views,
        "view_order": ["frontal", "lateral"], "normalization": "inside the model"}, indent=1))
    tok.save_pretrained(str(tmp))
    (tmp / "README.md").write_text(_model_card(cfg, loaded.metadata.get("step")))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def read_hf_export(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], Any, dict[str, Any]]:
    """(experiment config dict, model state, tokenizer, metadata) of a folder written by `export_hf`."""
    from medvl.data.tokenizer import load_tokenizer
    from medvl.train.checkpoint import CheckpointError, _with_aliases, read_tensors

    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is an incomplete medvl export: {e}") from e
    state = _with_aliases(read_tensors(path / "model.safetensors", "exported weights"),
                          config.get("medvl_tied_weights", {}))
    tokenizer = load_tokenizer(path)
    source = config.get("medvl_source", {})
    metadata = {"config": config["medvl_config"], "step": source.get("step"), "metrics": source.get("metrics", {}),
                "format": HF_EXPORT_FORMAT}
    return config["medvl_config"], state, tokenizer, metadata


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _reachable(endpoint: str, timeout: float) -> str | None:
    """None when a TCP connection to the endpoint opens within `timeout`, else why not."""
    url = urlparse(endpoint)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    result: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(None)
        except OSError as e:
            result.append(str(e) or type(e).__name__)

    # In a thread: name resolution ignores socket timeouts and can stall for long without a network.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return result[0] if result else f"no answer within {timeout:.0f}s"


def push_to_hub(folder: str | Path, repo_id: str, private: bool = False) -> str:
    """Upload an exported folder to the Hugging Face Hub; returns the repository URL.

    Raises:
        HubUnavailableError: offline mode, endpoint unreachable, no token, or the Hub refused the upload.
    """
    folder = Path(folder)
    later = f"the export is in {folder}; push it later with `hf upload {repo_id} {folder}`"
    if _offline():
        raise HubUnavailableError(f"HF_HUB_OFFLINE is set, so nothing was pushed: {later} (unset HF_HUB_OFFLINE "
                                  "when online)")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    why = _reachable(endpoint, HUB_PROBE_SECONDS)
    if why is not None:
        raise HubUnavailableError(f"cannot reach {endpoint} ({why}), so nothing was pushed: {later}")
    from huggingface_hub import HfApi, get_token

    token = get_token()
    if not token:
        raise HubUnavailableError(f"no Hugging Face token (run `hf auth login` or set HF_TOKEN): {later}")
    try:
        api = HfApi(endpoint=endpoint, token=token)
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message="medvl export")
    except Exception as e:  # noqa: BLE001 - any Hub/HTTP failure becomes one clear line
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise HubUnavailableError(f"pushing to {repo_id} failed ({first}): {later}") from e
    return str(url)
