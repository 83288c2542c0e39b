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
