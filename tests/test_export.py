"""`medvl export --format hf`: a folder in HF conventions that medvl loads back with the same reports; the Hub push
says clearly why it cannot run offline, without hanging."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from medvl.cli import main
from medvl.infer.predictor import load_trained, predict_reports


def test_export_loads_back_with_the_same_reports(
    trained_checkpoint: Path, synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "hf"
    assert main(["export", str(trained_checkpoint), str(out), "--format", "hf"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "preprocessor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
    } <= names
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "medvl_captioner" and config["tie_word_embeddings"] is True
    assert config["hidden_size"] == 32 and config["medvl_config"]["model"]["size"] == "tiny"

    # HF tooling reads the pieces: the tokenizer and config through transformers, the weights through safetensors.
    from safetensors import safe_open
    from transformers import AutoTokenizer, PretrainedConfig

    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok.bos_token == "<bos>" and tok.pad_token_id == 0
    assert PretrainedConfig.from_pretrained(str(out)).hidden_size == 32
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt"} and len(list(f.keys())) > 10

    study = synth_root / "images" / json.loads((synth_root / "annotation.json").read_text())["test"][0]["id"]
    views = [study / "0.png", study / "1.png"]
    original, exported = load_trained(trained_checkpoint, device="cpu"), load_trained(out, device="cpu")
    assert predict_reports(exported, [views], original.config.generation) == predict_reports(
        original, [views], original.config.generation
    )
    capsys.readouterr()
    assert main(["predict", str(out), *map(str, views)]) == 0 and capsys.readouterr().out.strip()
    assert main(["export", str(trained_checkpoint), str(out)]) == 2
    assert "is not empty: choose a new folder or pass --overwrite" in capsys.readouterr().err


def test_push_to_hub_offline_is_a_clear_message(
    trained_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = ["export", str(trained_checkpoint), str(tmp_path / "a"), "--push-to-hub", "me/model"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("medvl: error: HF_HUB_OFFLINE is set, so nothing was pushed") and "hf upload" in err
    assert (tmp_path / "a" / "model.safetensors").is_file()  # the export itself is kept

    with socket.socket() as s:  # a port nothing listens on: "no network"
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    t0 = time.monotonic()
    assert main(["export", str(trained_checkpoint), str(tmp_path / "b"), "--push-to-hub", "me/model"]) == 2
    assert time.monotonic() - t0 < 15
    assert f"cannot reach http://127.0.0.1:{port}" in capsys.readouterr().err


def test_push_to_hub_against_a_silent_endpoint_times_out_and_names_the_step(
    trained_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import threading

    import medvl.export

    # A local server that accepts every connection and never answers: the probe passes, every HTTP call would wait.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        monkeypatch.setenv("HF_TOKEN", "hf_local_test_token")
        monkeypatch.setattr(medvl.export, "HUB_TIMEOUT_SECONDS", 1.0)
        import huggingface_hub.constants

        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # conftest's offline mode, read once
        t0 = time.monotonic()
        assert main(["export", str(trained_checkpoint), str(tmp_path / "c"), "--push-to-hub", "me/model"]) == 2
        assert time.monotonic() - t0 < 20
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()
    err = capsys.readouterr().err
    assert err.startswith("medvl: error: creating the repository me/model timed out") and "hf upload" in err
    assert err.count("\n") == 1 and held  # the server was reached and never answered
    assert (tmp_path / "c" / "model.safetensors").is_file()
