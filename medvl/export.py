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

`push_to_hub(folder, repo_id)` uploads with huggingface_hub, and never hangs: with HF_HUB_OFFLINE=1, no reachable
endpoint (checked with a short timeout first) or no token it raises `HubUnavailableError` with what to do, and every
network step after that is bounded: each HTTP operation (connect, read, write) by `HUB_TIMEOUT_SECONDS`, and
creating the repository by a wall-clock deadline too; a step that times out is named in the error.
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
HUB_TIMEOUT_SECONDS = 20.0
"""Longest wait for any one answer of the Hub (an upload may take longer in all, but never waits this long for a
byte); creating the repository gets at most three times this in all."""


class HubUnavailableError(ValueError):
    """The Hub cannot be used now (offline mode, no network, no token, or a refused upload)."""


def is_hf_export(path: Path) -> bool:
    """Whether `path` is a folder written by `export_hf`."""
    try:
        return json.loads((path / "config.json").read_text()).get("medvl_format") == HF_EXPORT_FORMAT
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def _depth(mc: Any) -> dict[str, int]:
    """Layer counts in HF's names: `num_hidden_layers` for a decoder-only stack, `encoder_layers` /
    `decoder_layers` (as BART's config) for an encoder-decoder such as the unified family."""
    if hasattr(mc, "n_layers"):
        return {"num_hidden_layers": mc.n_layers}
    return {"encoder_layers": mc.encoder_layers, "decoder_layers": mc.decoder_layers}


def _hf_config(
    cfg: Any,
    family_task: str,
    tokenizer: Any,
    aliases: dict[str, str],
    meta: dict[str, Any],
    assets: dict[str, Any],
) -> dict:
    import medvl

    mc = cfg.model
    return {
        "model_type": f"medvl_{cfg.model_family}",
        "architectures": [f"Medvl{cfg.model_family.title()}"],
        "medvl_format": HF_EXPORT_FORMAT,
        "medvl_version": medvl.__version__,
        "library_name": "medvl",
        "task": family_task,
        "size": cfg.model_size,
        "vocab_size": mc.vocab_size,
        "hidden_size": mc.d_model,
        **_depth(mc),
        "num_attention_heads": mc.n_heads,
        "max_position_embeddings": getattr(mc, "max_len", None) or getattr(mc, "max_target_positions", None),
        "image_size": mc.image_size,
        "num_channels": mc.in_chans,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "tie_word_embeddings": bool(aliases),
        "torch_dtype": "float32",
        "medvl_tied_weights": aliases,
        "medvl_config": cfg.to_dict(),
        # the task's other assets (e.g. the unified family's answer candidates and class names); the tokenizer has
        # its own files
        "medvl_task_assets": {k: v for k, v in assets.items() if k not in ("tokenizer", "tokenizer_specials")},
        "medvl_source": {
            "step": meta.get("step"),
            "metrics": meta.get("metrics", {}),
            "kind": meta.get("kind"),
            "versions": meta.get("versions", {}),
        },
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
    if loaded.tokenizer is None:
        raise ValueError(
            f"medvl export writes text-generating models (report tasks); {checkpoint} is a "
            f"{loaded.task.name} checkpoint, which predict, serve and demo load directly"
        )
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors, aliases = _dedupe(loaded.model.state_dict())
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    task = cfg.task_name or MODEL_FAMILIES.get(cfg.model_family).task
    (tmp / "config.json").write_text(
        json.dumps(_hf_config(cfg, task, loaded.tokenizer, aliases, loaded.metadata, loaded.task.metadata()), indent=1)
    )
    gen = dataclasses.asdict(cfg.generation)
    tok = loaded.tokenizer
    (tmp / "generation_config.json").write_text(
        json.dumps(
            {
                **{
                    k: gen[k]
                    for k in (
                        "num_beams",
                        "max_new_tokens",
                        "no_repeat_ngram_size",
                        "length_penalty",
                        "do_sample",
                        "temperature",
                        "top_p",
                        "top_k",
                    )
                },
                "bos_token_id": tok.bos_token_id,
                "eos_token_id": tok.eos_token_id,
                "pad_token_id": tok.pad_token_id,
                "decoder_start_token_id": tok.bos_token_id,
            },
            indent=1,
        )
    )
    mc = cfg.model
    (tmp / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "MedvlXrayImageProcessor",
                "do_resize": True,
                "size": {"height": mc.image_size, "width": mc.image_size},
                "resample": "box (shrink) / bilinear (enlarge)",
                "do_rescale": True,
                "rescale_factor": 1 / 255,
                "image_mean": [mc.image_mean] * mc.in_chans,
                "image_std": [mc.image_std] * mc.in_chans,
                "num_channels": mc.in_chans,
                "max_views": mc.max_views,
                "view_order": ["frontal", "lateral"],
                "normalization": "inside the model",
            },
            indent=1,
        )
    )
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
    state = _with_aliases(
        read_tensors(path / "model.safetensors", "exported weights"), config.get("medvl_tied_weights", {})
    )
    from medvl.data.tokenizer import special_tokens, tokenizer_to_json

    tokenizer = load_tokenizer(path)
    source = config.get("medvl_source", {})
    metadata = {
        **config.get("medvl_task_assets", {}),
        "config": config["medvl_config"],
        "step": source.get("step"),
        "metrics": source.get("metrics", {}),
        "format": HF_EXPORT_FORMAT,
        "tokenizer": tokenizer_to_json(tokenizer),
        "tokenizer_specials": special_tokens(tokenizer),
    }
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
        raise HubUnavailableError(
            f"HF_HUB_OFFLINE is set, so nothing was pushed: {later} (unset HF_HUB_OFFLINE when online)"
        )
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    why = _reachable(endpoint, HUB_PROBE_SECONDS)
    if why is not None:
        raise HubUnavailableError(f"cannot reach {endpoint} ({why}), so nothing was pushed: {later}")
    from huggingface_hub import HfApi, get_token

    token = get_token()
    if not token:
        raise HubUnavailableError(f"no Hugging Face token (run `hf auth login` or set HF_TOKEN): {later}")
    api = HfApi(endpoint=endpoint, token=token)
    timeout = HUB_TIMEOUT_SECONDS
    with _bounded_http(timeout):
        url = _step(
            f"creating the repository {repo_id}",
            lambda: api.create_repo(repo_id, private=private, exist_ok=True),
            endpoint,
            timeout,
            3 * timeout,
            later,
        )
        _step(
            f"uploading {folder} to {repo_id}",
            lambda: api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message="medvl export"),
            endpoint,
            timeout,
            None,
            later,
        )
    return str(url)


class _bounded_http:  # noqa: N801 - used as a context manager
    """huggingface_hub's shared HTTP client with a timeout on every operation (its default waits forever)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.previous: Any = None

    def __enter__(self) -> None:
        try:
            import httpx2 as httpx  # what this huggingface_hub is built on
        except ImportError:
            try:
                import httpx
            except ImportError:
                return
        from huggingface_hub.utils import _http

        factory = getattr(_http, "_GLOBAL_CLIENT_FACTORY", None)
        if factory is None or not hasattr(_http, "set_client_factory"):
            return
        self.previous = factory
        hook = getattr(_http, "hf_request_event_hook", None)
        limit = httpx.Timeout(self.timeout)
        _http.set_client_factory(
            lambda: httpx.Client(
                event_hooks={"request": [hook]} if hook else None, follow_redirects=True, timeout=limit
            )
        )
        _http.close_session()

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            from huggingface_hub.utils import _http

            _http.set_client_factory(self.previous)
            _http.close_session()


def _step(what: str, fn: Any, endpoint: str, timeout: float, deadline: float | None, later: str) -> Any:
    """Run one network step in a thread; a step past `deadline` seconds, or a timeout inside it, is named."""
    result: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as e:  # noqa: BLE001 - handed to the caller below
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(deadline)
    if thread.is_alive():
        raise HubUnavailableError(
            f"{what} timed out: no answer from {endpoint} within {deadline:.0f}s, so nothing was pushed: {later}"
        )
    if errors:
        e = errors[0]
        chain = [e, e.__cause__, e.__context__]
        if any(isinstance(x, TimeoutError) or "timeout" in type(x).__name__.lower() for x in chain if x is not None):
            raise HubUnavailableError(
                f"{what} timed out: {endpoint} sent no answer within {timeout:.0f}s: {later}"
            ) from e
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise HubUnavailableError(f"{what} failed ({first}): {later}") from e
    return result[0]
