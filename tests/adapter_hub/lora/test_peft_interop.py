"""Interop with the real `peft` package, both directions, Llama and GPT-2 shapes: same logits."""

from __future__ import annotations

import pytest
import torch

from adapter_hub import LoraAdapter, LoraConfig, attach
from adapter_hub.lora import lora_layers

peft = pytest.importorskip("peft")

MODELS = ["tiny-llama", "tiny-gpt2"]
CASES = [  # (peft kwargs, ours kwargs)
    (dict(r=4, lora_alpha=8), dict(r=4, alpha=8)),
    (dict(r=8, lora_alpha=32, use_rslora=True), dict(r=8, alpha=32, use_rslora=True)),
]


def _x():
    return torch.randint(0, 256, (3, 11), generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("peft_kwargs, _", CASES)
def test_peft_saved_adapter_loads_in_ours(tiny_model, tmp_path, name, peft_kwargs, _):
    torch.manual_seed(0)
    # init_lora_weights=False gives B random too, so the adapter really changes the logits
    reference = peft.get_peft_model(
        tiny_model(name),
        peft.LoraConfig(target_modules="all-linear", init_lora_weights=False, rank_pattern={r".*\.0\..*": 2},
                        **peft_kwargs),
    ).eval()
    expected = reference(_x()).logits
    reference.save_pretrained(tmp_path / "peft")
    adapter = LoraAdapter.load(tmp_path / "peft")
    assert sorted(set(adapter.ranks.values())) == [2, peft_kwargs["r"]]
    ours = attach(tiny_model(name), adapter, name="p").eval()
    assert (expected - tiny_model(name)(_x()).logits).abs().max() > 1e-3  # the adapter matters
    torch.testing.assert_close(ours(_x()).logits, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("_, ours_kwargs", CASES)
def test_our_adapter_loads_in_peft(tiny_model, tmp_path, name, _, ours_kwargs):
    model = tiny_model(name)
    rank_pattern = {"model.layers.1.mlp.up_proj": 2} if name == "tiny-llama" else {"transformer.h.1.mlp.c_fc": 2}
    attach(model, LoraConfig(rank_pattern=rank_pattern, **ours_kwargs), name="ours", seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.lora_B["ours"].copy_(torch.randn(layer.lora_B["ours"].shape, generator=g) * 0.05)
    expected = model.eval()(_x()).logits
    LoraAdapter.from_model(model, "ours").save(tmp_path / "ours")
    loaded = peft.PeftModel.from_pretrained(tiny_model(name), tmp_path / "ours").eval()
    torch.testing.assert_close(loaded(_x()).logits, expected, atol=1e-5, rtol=0)
    # and PEFT saw the mixed ranks we wrote
    ranks = {m.lora_A["default"].weight.shape[0] for m in loaded.modules() if hasattr(m, "lora_A") and "default" in m.lora_A}
    assert ranks == {2, ours_kwargs["r"]}


# ---- folders a plain LoRA loader would read wrongly: refused, naming the field ----------------------


def _peft_folder(tiny_model, tmp_path, base="tiny-llama", **config):
    torch.manual_seed(0)
    targets = ["q_proj", "v_proj"] if base == "tiny-llama" else ["c_attn"]
    model = peft.get_peft_model(tiny_model(base), peft.LoraConfig(**{"r": 4, "lora_alpha": 8, "target_modules": targets,
                                                                   **config}))
    folder = tmp_path / "peft"
    model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("config, message", [
    (dict(init_lora_weights="pissa"), r"init_lora_weights is 'pissa'.*path_initial_model_for_weight_conversion"),
    (dict(init_lora_weights="pissa_niter_4"), r"init_lora_weights is 'pissa_niter_4'.*Convert"),
    (dict(init_lora_weights="olora"), r"init_lora_weights is 'olora'.*Convert"),
    (dict(alora_invocation_tokens=[5, 6]), "alora_invocation_tokens is set"),
    (dict(use_dora=True), "DoRA"),
    (dict(bias="all", base="tiny-gpt2"), "unsupported tensor"),  # GPT-2 has biases to save (Llama has none)
    (dict(modules_to_save=["lm_head"]), "unsupported tensor"),
    (dict(target_modules=["q_proj", "embed_tokens"]), "unsupported tensor"),
    (dict(trainable_token_indices=[1, 2]), "unsupported tensor"),
])
def test_peft_folders_we_cannot_read_right_are_refused(tiny_model, tmp_path, config, message):
    from registry import Registry
    from registry.errors import AdapterFormatError
    from registry.testing import snapshot

    folder = _peft_folder(tiny_model, tmp_path, **config)
    with pytest.raises(AdapterFormatError, match=message):
        LoraAdapter.load(folder)
    reg = Registry.open(tmp_path / "registry")
    before = snapshot(reg)
    with pytest.raises(AdapterFormatError, match=message):
        reg.register(folder, task="t")
    assert snapshot(reg) == before


def test_a_converted_pissa_folder_loads_and_matches_peft(tiny_model, tmp_path):
    """PEFT's conversion turns PiSSA into a plain LoRA on the untouched base: that one loads, same logits."""
    torch.manual_seed(0)
    model = peft.get_peft_model(tiny_model("tiny-llama"), peft.LoraConfig(r=4, lora_alpha=8, init_lora_weights="pissa",
                                                                         target_modules=["q_proj", "v_proj"]))
    model.save_pretrained(tmp_path / "initial")
    with torch.no_grad():  # "training": move the factors away from their initial values
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.add_(torch.randn_like(p) * 0.05)
    expected = model.eval()(_x()).logits  # on PiSSA's modified base
    model.save_pretrained(tmp_path / "converted", path_initial_model_for_weight_conversion=tmp_path / "initial")
    ours = attach(tiny_model("tiny-llama"), LoraAdapter.load(tmp_path / "converted"), name="p").eval()
    torch.testing.assert_close(ours(_x()).logits, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("field", ["alpha_pattern", "rank_pattern"])
def test_overlapping_pattern_keys_mean_what_peft_means(tiny_model, tmp_path, field):
    """{".*\\.q_proj": 4, "model.layers.0.self_attn.q_proj": 20}: PEFT takes the first key that matches, in
    the saved order (so layer 0's q_proj gets 4, not 20); ours must give the same logits."""
    pattern = {r".*\.q_proj": 4 if field == "alpha_pattern" else 2, "model.layers.0.self_attn.q_proj": 20 if
               field == "alpha_pattern" else 6}
    torch.manual_seed(0)
    reference = peft.get_peft_model(tiny_model("tiny-llama"), peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False, **{field: pattern})).eval()
    expected = reference(_x()).logits
    reference.save_pretrained(tmp_path / "peft")
    adapter = LoraAdapter.load(tmp_path / "peft")
    ours = attach(tiny_model("tiny-llama"), adapter, name="p").eval()
    torch.testing.assert_close(ours(_x()).logits, expected, atol=1e-5, rtol=0)
    if field == "rank_pattern":
        assert adapter.ranks["model.layers.0.self_attn.q_proj"] == 2  # the first key, as PEFT built it
