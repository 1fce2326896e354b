"""The XrayGPT family at tiny size on CPU: freezing, LoRA, the answer-only loss, generation, chat, checkpoints with
and without a user-supplied LLM folder, and the MiniGPT-4 converter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from medvl.cli import main
from medvl.config.experiment import load_experiment
from medvl.data.dataset import Sample, collate
from medvl.data.tokenizer import train_bpe_tokenizer
from medvl.infer.config import GenerationConfig
from medvl.infer.predictor import load_trained
from medvl.models.conversation import ConversationTemplate
from medvl.models.families import MODEL_FAMILIES
from medvl.models.minigpt4 import convert_minigpt4
from medvl.models.xraygpt import XrayGPT, trainable_parameters
from medvl.tasks.instructed_report import IGNORE, InstructedReportTask
from medvl.train.loop import Trainer, train

from .conftest import tiny_overrides

REPORTS = [
    "The heart is normal in size. The lungs are clear.",
    "Moderate cardiomegaly. Small left pleural effusion.",
    "No acute cardiopulmonary abnormality.",
    "Right lower lobe consolidation.",
] * 10
XRAYGPT = ["model.family=xraygpt", "model.size=tiny"]
QFORMER = [*XRAYGPT, "model.bridge=qformer"]  # the recipe's bridge is mlp; MiniGPT-4 weights need the Q-Former


@pytest.fixture(scope="module")
def tokenizer():  # noqa: ANN201
    return train_bpe_tokenizer(REPORTS, vocab_size=300)


def _model(tokenizer, **fields) -> XrayGPT:  # noqa: ANN001
    family = MODEL_FAMILIES.get("xraygpt")
    config = family.make_config("tiny", {"vocab_size": len(tokenizer), "pad_id": tokenizer.pad_token_id, **fields})
    torch.manual_seed(0)
    return family.build(config)


def _batch(tokenizer, n: int = 2, views: int = 2):  # noqa: ANN001, ANN202
    from medvl.data.tokenizer import encode_report

    rng = np.random.default_rng(0)
    samples = [
        Sample(
            f"s{i}",
            rng.integers(0, 255, (views, 32, 32), dtype=np.uint8),
            list(range(views)),
            encode_report(tokenizer, REPORTS[i], 64)[0],
            REPORTS[i],
            None,
        )
        for i in range(n)
    ]
    return collate(samples, max_views=2, pad_id=tokenizer.pad_token_id)


def test_frozen_parts_get_no_gradient_and_do_not_change(tokenizer) -> None:  # noqa: ANN001
    model = _model(tokenizer, freeze_vision=True, freeze_llm=True)
    task = InstructedReportTask(model, tokenizer)
    frozen = {k: v.detach().clone() for k, v in model.named_parameters() if k.startswith(("encoder.", "llm."))}
    assert frozen and all(not p.requires_grad for k, p in model.named_parameters() if k in frozen)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    assert not model.encoder.training and not model.llm.training  # frozen parts stay in eval mode
    task(_batch(tokenizer))["loss"].backward()
    for name, param in model.named_parameters():
        if name in frozen:
            assert param.grad is None, name
    assert model.proj.weight.grad is not None and model.query_tokens.grad is not None
    optimizer.step()
    for name, param in model.named_parameters():
        if name in frozen:
            assert torch.equal(param, frozen[name]), name


def test_lora_adds_only_adapter_parameters(tokenizer) -> None:  # noqa: ANN001
    plain = _model(tokenizer, freeze_llm=True, freeze_vision=True, freeze_qformer=True)
    lora = _model(tokenizer, freeze_llm=True, freeze_vision=True, freeze_qformer=True, lora_r=4)
    plain_trainable, plain_total = trainable_parameters(plain)
    lora_trainable, lora_total = trainable_parameters(lora)
    added = [k for k, p in lora.named_parameters() if p.requires_grad and "lora_" in k]
    assert added and all(".llm." in f".{k}" for k in added)
    assert lora_total - plain_total == sum(p.numel() for k, p in lora.named_parameters() if "lora_" in k)
    assert lora_trainable - plain_trainable == lora_total - plain_total  # only the adapters are new and trainable
    assert {k for k, p in plain.named_parameters() if p.requires_grad} == {"proj.weight", "proj.bias"}


def test_loss_is_on_the_answer_tokens_only(tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    model = _model(tokenizer).eval()  # no dropout: the two computations below must agree exactly
    task = InstructedReportTask(model, tokenizer)
    batch = _batch(tokenizer)
    answers = task._answers(batch)
    prompts = [model.config.template.single_turn("Describe it.")] * 2
    seq = task._sequences(prompts, answers, left_pad=False)
    for i, answer in enumerate(answers):
        labels = seq["labels"][i][seq["attention_mask"][i].bool()].tolist()
        assert [t for t in labels if t != IGNORE] == answer  # exactly the report + EOS
        assert labels[-1] == tokenizer.eos_token_id and labels[0] == IGNORE
        assert int(seq["image_mask"][i].sum()) == model.n_image_tokens == 4
    # The loss equals a cross-entropy computed by hand over those positions.
    logits = model(
        batch.images, batch.view_ids, batch.view_mask, seq["input_ids"], seq["attention_mask"], seq["image_mask"]
    )
    targets = seq["labels"][:, 1:]
    keep = targets != IGNORE
    by_hand = torch.nn.functional.cross_entropy(logits[:, :-1][keep], targets[keep])
    monkeypatch.setattr(model.config.template, "sample_instruction", lambda rng=None: "Describe it.")
    out = task(batch)
    assert out["loss"].item() == pytest.approx(by_hand.item(), rel=1e-6) and int(out["n_tokens"]) == int(keep.sum())


def test_generation_and_multi_turn_chat(tokenizer) -> None:  # noqa: ANN001
    model = _model(tokenizer).eval()
    task = InstructedReportTask(model, tokenizer)
    batch = _batch(tokenizer)
    gen = GenerationConfig(num_beams=1, max_new_tokens=8)
    first = task.generate(batch, gen)
    assert len(first) == 2 and all(isinstance(t, str) for t in first) and task.generate(batch, gen) == first
    beams = task.generate(batch, GenerationConfig(num_beams=2, max_new_tokens=8))
    assert len(beams) == 2
    one = _batch(tokenizer, n=1)
    answer = task.chat(one, [], "Is there an effusion?", gen)
    follow_up = task.chat(one, [("Is there an effusion?", answer)], "And the heart?", gen)
    assert isinstance(answer, str) and isinstance(follow_up, str)
    before, after = model.config.template.chat([("Is there an effusion?", "No.")], "And the heart?")
    assert (
        before.startswith(model.config.template.system)
        and "###Doctor: No. ###Patient: And the heart? ###Doctor:" in after
    )
    with pytest.raises(ValueError, match="one study at a time"):
        task.chat(batch, [], "?", gen)
    assert InstructedReportTask.supports_chat


def test_template_is_data() -> None:
    custom = ConversationTemplate(
        system="SYS",
        user="USER",
        assistant="BOT",
        image="[IMG]<x>[/IMG]",
        placeholder="<x>",
        stop="USER",
        prompts=["Report."],
    )
    assert custom.single_turn("Report.") == ("USER: [IMG]", "[/IMG] Report. BOT:")
    assert custom.clean_answer(" fine. USER: more") == "fine."
    with pytest.raises(ValueError, match="exactly once"):
        ConversationTemplate(image="no placeholder here")


def test_recipe_trains_evaluates_and_reloads_identically(synth_root: Path, tmp_path: Path) -> None:
    cfg = load_experiment(
        "xraygpt_tiny_synthetic",
        tiny_overrides(
            synth_root,
            tmp_path,
            *XRAYGPT,
            "train.max_steps=3",
            "train.eval_every=3",
            "model.template.prompts=[Report.]",
        ),
    )
    trainer = Trainer(cfg)
    trainer.fit()
    loaded = load_trained(tmp_path / "checkpoints" / "last")
    batch = _batch(trainer.task.tokenizer).to(loaded.device)
    gen = GenerationConfig(num_beams=1, max_new_tokens=6)
    trainer.model.eval()
    assert loaded.task.generate(batch, gen) == trainer.task.generate(batch, gen)
    seq = loaded.task._sequences([loaded.config.model.template.single_turn("x")] * 2, None, True)
    args = (batch.images, batch.view_ids, batch.view_mask, seq["input_ids"], seq["attention_mask"], seq["image_mask"])
    assert torch.equal(loaded.model(*args), trainer.model(*args))
    out = tmp_path / "eval"
    assert main(["evaluate", str(tmp_path), "--out", str(out), "--no-meteor", "--bootstrap", "0", "--no-html"]) == 0
    assert json.loads((out / "metrics.json").read_text())["n_studies"] > 0


def _llm_folder(root: Path, vocab: list[str]) -> Path:
    """A user-supplied LLM folder: a tiny random Llama and its own tokenizer with <s>/</s>/<unk> specials."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tok.save_pretrained(str(root))
    torch.manual_seed(1)
    LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=256,
            tie_word_embeddings=False,
        )
    ).save_pretrained(str(root))
    return root


def test_bring_your_own_llm_with_lora_saves_only_what_trained(synth_root: Path, tmp_path: Path) -> None:
    words = [
        "<unk>",
        "<s>",
        "</s>",
        *sorted({w for r in REPORTS for w in r.replace(".", " .").split()}),
        *"###Patient : <Img> </Img> ###Doctor Describe Report .".split(),
    ]
    llm = _llm_folder(tmp_path / "llm", list(dict.fromkeys(words)))
    run = tmp_path / "run"
    cfg = load_experiment(
        "xraygpt_tiny_synthetic",
        tiny_overrides(
            synth_root,
            run,
            *XRAYGPT,
            "train.max_steps=2",
            "train.eval_every=2",
            f"model.llm_path={llm}",
            f"tokenizer.path={llm}",
            "model.freeze_llm=true",
            "model.lora_r=4",
            "model.template.prompts=[Report.]",
        ),
    )
    trainer = Trainer(cfg)
    assert trainer.task.tokenizer.bos_token == "<s>" and trainer.task.tokenizer.pad_token == "<unk>"
    trainer.fit()
    stored = load_file(run / "checkpoints" / "last" / "model.safetensors")
    assert any("lora_" in k for k in stored) and not any(k.startswith("llm.") and "lora_" not in k for k in stored)
    loaded = load_trained(run)  # rebuilds the LLM from its folder, then loads adapters and projection
    batch = _batch(trainer.task.tokenizer).to(loaded.device)
    trainer.model.eval()
    seq = loaded.task._sequences([loaded.config.model.template.single_turn("x")] * 2, None, True)
    args = (batch.images, batch.view_ids, batch.view_mask, seq["input_ids"], seq["attention_mask"], seq["image_mask"])
    assert torch.equal(loaded.model(*args), trainer.model(*args))
    assert loaded.tokenizer.eos_token == "</s>"


def test_quantization_and_missing_llm_folder_fail_clearly(tokenizer, tmp_path: Path) -> None:  # noqa: ANN001
    with pytest.raises(FileNotFoundError, match="not an HF model directory"):
        _model(tokenizer, llm_path=str(tmp_path))
    llm = _llm_folder(tmp_path / "llm", ["<unk>", "<s>", "</s>", "a"])
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
            _model(tokenizer, llm_path=str(llm), llm_quantization="8bit")
    with pytest.raises(ValueError, match="use the LLM's own tokenizer"):
        _model(tokenizer, llm_path=str(llm))  # 4-token LLM, 300-token tokenizer


def _lavis_state(model: XrayGPT) -> dict[str, torch.Tensor]:
    """A MiniGPT-4-style state dict (LAVIS names and shapes) holding this model's Q-Former and projection."""
    out = {
        "llama_proj.weight": model.proj.weight.detach().clone(),
        "llama_proj.bias": model.proj.bias.detach().clone(),
        "query_tokens": model.query_tokens.detach().clone(),
    }
    for key, value in model.qformer.state_dict().items():
        if key.startswith("layernorm."):
            out[f"Qformer.bert.embeddings.LayerNorm.{key.split('.')[-1]}"] = value.clone()
        else:
            key = key.replace(".attention.attention.", ".attention.self.").replace(
                ".crossattention.attention.", ".crossattention.self."
            )
            out[f"Qformer.bert.{key}"] = value.clone()
    hidden = model.config.qformer_dim
    out["Qformer.bert.encoder.layer.0.intermediate.dense.weight"] = torch.zeros(4 * hidden, hidden)
    out["Qformer.bert.embeddings.word_embeddings.weight"] = torch.zeros(10, hidden)
    out["visual_encoder.blocks.0.attn.qkv.weight"] = torch.zeros(3, 3)
    return out


def test_minigpt4_converter_maps_weights_onto_the_model(
    tokenizer,
    tmp_path: Path,  # noqa: ANN001
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = _model(tokenizer, projection="linear")
    pth = tmp_path / "xraygpt_stage2.pth"
    torch.save({"model": _lavis_state(source), "epoch": 3}, pth)
    out = tmp_path / "converted.safetensors"
    assert main(["convert", "minigpt4", str(pth), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "skipped 1: EVA ViT-g layout" in printed and "Q-Former text" in printed
    fresh = _model(tokenizer)
    fresh.load_state_dict(load_file(out), strict=False)
    for name in (
        "proj.weight",
        "query_tokens",
        "qformer.encoder.layer.0.crossattention.attention.key.weight",
        "qformer.layernorm.bias",
    ):
        assert torch.equal(fresh.state_dict()[name], source.state_dict()[name]), name
    converted, skipped = convert_minigpt4(_lavis_state(source))
    assert set(converted) <= set(fresh.state_dict()) and len(skipped) == 3
    pickled = tmp_path / "code.pth"
    pickled.write_bytes(__import__("pickle").dumps(Path("/"), protocol=2))
    assert main(["convert", "minigpt4", str(pickled), "--out", str(out), "--overwrite"]) == 2
    assert "never unpickles code" in capsys.readouterr().err
    assert load_file(out).keys() == converted.keys()  # a failed conversion leaves the earlier file as it was


def test_convert_refuses_an_existing_out_file_unless_overwrite(
    tokenizer,
    tmp_path: Path,  # noqa: ANN001
    capsys: pytest.CaptureFixture[str],
) -> None:
    pth = tmp_path / "stage.pth"
    torch.save({"model": _lavis_state(_model(tokenizer, projection="linear"))}, pth)
    out = tmp_path / "converted.safetensors"
    out.write_bytes(b"precious")
    assert main(["convert", "minigpt4", str(pth), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"medvl: error: {out} already exists: choose another --out or pass --overwrite to replace it\n"
    assert out.read_bytes() == b"precious"
    assert main(["convert", "minigpt4", str(pth), "--out", str(out), "--overwrite"]) == 0
    assert "proj.weight" in load_file(out) and sorted(p.name for p in tmp_path.iterdir()) == [out.name, pth.name]


def test_init_from_converted_weights(tokenizer, synth_root: Path, tmp_path: Path) -> None:  # noqa: ANN001
    from safetensors.torch import save_file

    run = tmp_path / "run"
    cfg = load_experiment("xraygpt_tiny_synthetic", tiny_overrides(synth_root, run, *QFORMER, "train.max_steps=1"))
    probe = Trainer(cfg)  # to learn the vocabulary size the run will have
    source = _model(probe.task.tokenizer)
    converted, _ = convert_minigpt4(_lavis_state(source))
    weights = tmp_path / "stage1.safetensors"
    save_file({k: v.contiguous() for k, v in converted.items()}, str(weights))
    started = Trainer(
        load_experiment(
            "xraygpt_tiny_synthetic",
            tiny_overrides(synth_root, tmp_path / "run2", *QFORMER, "train.max_steps=1", f"train.init_from={weights}"),
        )
    )
    assert torch.equal(started.model.proj.weight, source.proj.weight)
    assert torch.equal(started.model.query_tokens, source.query_tokens)
    save_file({"not.a.weight": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="do not belong to this model"):
        Trainer(
            load_experiment(
                "xraygpt_tiny_synthetic",
                tiny_overrides(
                    synth_root, tmp_path / "run3", *QFORMER, f"train.init_from={tmp_path / 'bad.safetensors'}"
                ),
            )
        )


def test_demo_offers_a_chat_for_this_family(synth_root: Path, tmp_path: Path) -> None:
    import gradio as gr

    from medvl.demo.app import analyze, create_demo
    from medvl.infer.predictor import batch_studies

    train(
        load_experiment("xraygpt_tiny_synthetic", tiny_overrides(synth_root, tmp_path, *XRAYGPT, "train.max_steps=1"))
    )
    loaded = load_trained(tmp_path)
    assert loaded.supports_chat
    assert any(isinstance(block, gr.Chatbot) for block in create_demo(loaded).blocks.values())
    study_dir = next(p for p in (synth_root / "images").iterdir() if p.is_dir())
    gen = GenerationConfig(num_beams=1, max_new_tokens=6)
    analysis = analyze(loaded, gen, sorted(study_dir.glob("*.png")))  # report, findings and saliency of one study
    assert isinstance(analysis.report, str) and analysis.overlay is not None
    answer = loaded.task.chat(
        batch_studies(loaded, [analysis.study]), [("Describe it.", analysis.report)], "Is there an effusion?", gen
    )
    assert isinstance(answer, str)
