"""LoraAdapter files: PEFT layout, round trips, and every kind of bad file refused with its name."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

from adapter_hub import LoraAdapter, LoraConfig, attach
from adapter_hub.core.adapter import CONFIG_FILE, WEIGHTS_FILE
from adapter_hub.core.errors import AdapterFormatError, NonFiniteError
from adapter_hub.lora import lora_layers


def _trained_adapter(model, r=4, **config):
    attach(model, LoraConfig(r=r, **config), name="a", seed=0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.lora_B["a"].copy_(torch.randn(layer.lora_B["a"].shape, generator=g) * 0.05)
    return LoraAdapter.from_model(model, "a")


def test_saved_folder_is_peft_layout(tiny_model, tmp_path):
    adapter = _trained_adapter(tiny_model(), r=4, alpha=16)
    adapter.save(tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    config = json.loads((tmp_path / "a" / CONFIG_FILE).read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 16
    assert config["rank_pattern"] == {} and config["base_model_name_or_path"] == "tiny-llama"
    tensors = load_file(str(tmp_path / "a" / WEIGHTS_FILE))
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    assert tensors[key].shape == (4, 64)
    assert tensors[key.replace("lora_A", "lora_B")].shape == (64, 4)
    assert len(tensors) == 2 * 14


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_round_trip_is_bit_exact(tiny_model, tmp_path, name):
    adapter = _trained_adapter(tiny_model(name), r=4, use_rslora=True)
    adapter.save(tmp_path / "a")
    loaded = LoraAdapter.load(tmp_path / "a")
    assert loaded.config.use_rslora and loaded.fan_in_fan_out == (name == "tiny-gpt2")
    assert loaded.base_model == adapter.base_model
    for module, f in adapter.modules.items():
        assert torch.equal(loaded.modules[module].A, f.A) and torch.equal(loaded.modules[module].B, f.B)
        assert loaded.scaling(module) == adapter.scaling(module)


def test_mixed_ranks_write_rank_and_alpha_patterns(tmp_path):
    config = LoraConfig(r=4, alpha=8, rank_pattern={"q_proj": 2}, alpha_pattern={"v_proj": 3.0})
    from adapter_hub.models.loading import load_base_model

    adapter = _trained_adapter(load_base_model("tiny-llama"), r=4, alpha=8,
                               rank_pattern=config.rank_pattern, alpha_pattern=config.alpha_pattern)
    assert adapter.ranks["model.layers.0.self_attn.q_proj"] == 2
    adapter.save(tmp_path / "a")
    saved = json.loads((tmp_path / "a" / CONFIG_FILE).read_text())
    assert saved["rank_pattern"] == {"model.layers.0.self_attn.q_proj": 2, "model.layers.1.self_attn.q_proj": 2}
    assert saved["alpha_pattern"] == {"model.layers.0.self_attn.v_proj": 3.0, "model.layers.1.self_attn.v_proj": 3.0}
    loaded = LoraAdapter.load(tmp_path / "a")
    assert loaded.scaling("model.layers.1.self_attn.v_proj") == pytest.approx(3.0 / 4)
    assert loaded.scaling("model.layers.1.self_attn.q_proj") == pytest.approx(8 / 2)


def test_provenance_travels_in_safetensors_metadata(tiny_model, tmp_path):
    adapter = _trained_adapter(tiny_model())
    adapter.provenance = {"op": "merge", "method": "ties", "inputs": ["a:1", "b:2"]}
    adapter.save(tmp_path / "a")
    assert LoraAdapter.load(tmp_path / "a").provenance == adapter.provenance


# ---- bad files -----------------------------------------------------------------------------------


@pytest.fixture
def saved(tiny_model, tmp_path):
    folder = tmp_path / "a"
    _trained_adapter(tiny_model()).save(folder)
    return folder


def test_malformed_config_json(saved):
    (saved / CONFIG_FILE).write_text("{not json")
    with pytest.raises(AdapterFormatError, match="adapter_config.json: not valid JSON"):
        LoraAdapter.load(saved)


@pytest.mark.parametrize("patch, message", [
    ({"r": 0}, "r must be a positive number"),
    ({"r": "eight"}, "r must be a positive number"),
    ({"lora_alpha": -1}, "lora_alpha must be a positive number"),
    ({"peft_type": "IA3"}, "only LORA"),
    ({"use_dora": True}, "DoRA"),
    ({"rank_pattern": [1, 2]}, "rank_pattern must be an object"),
    ({"r": 8}, "rank 4 in the weights but 8 in the config"),
])
def test_inconsistent_config(saved, patch, message):
    config = json.loads((saved / CONFIG_FILE).read_text())
    config.update(patch)
    (saved / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(AdapterFormatError, match=message):
        LoraAdapter.load(saved)


def test_config_that_is_not_an_object(saved):
    (saved / CONFIG_FILE).write_text("[1, 2]")
    with pytest.raises(AdapterFormatError, match="expected a JSON object"):
        LoraAdapter.load(saved)


def test_truncated_safetensors(saved):
    data = (saved / WEIGHTS_FILE).read_bytes()
    (saved / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(AdapterFormatError, match="unreadable or truncated safetensors"):
        LoraAdapter.load(saved)


def test_wrong_tensor_shapes(saved):
    tensors = load_file(str(saved / WEIGHTS_FILE))
    key = next(k for k in tensors if k.endswith("lora_B.weight"))
    tensors[key] = torch.zeros(64, 3)  # rank 3 against lora_A's rank 4
    save_file(tensors, str(saved / WEIGHTS_FILE))
    with pytest.raises(AdapterFormatError, match="ranks differ"):
        LoraAdapter.load(saved)


def test_missing_half_of_a_pair(saved):
    tensors = load_file(str(saved / WEIGHTS_FILE))
    del tensors[next(k for k in tensors if k.endswith("lora_A.weight"))]
    save_file(tensors, str(saved / WEIGHTS_FILE))
    with pytest.raises(AdapterFormatError, match="has no lora_A tensor"):
        LoraAdapter.load(saved)


def test_unsupported_tensor_kind(saved):
    tensors = load_file(str(saved / WEIGHTS_FILE))
    tensors["base_model.model.model.embed_tokens.lora_embedding_A"] = torch.zeros(4, 259)
    save_file(tensors, str(saved / WEIGHTS_FILE))
    with pytest.raises(AdapterFormatError, match="unsupported tensor"):
        LoraAdapter.load(saved)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_tensors(saved, bad):
    tensors = load_file(str(saved / WEIGHTS_FILE))
    key = next(k for k in tensors if k.endswith("lora_A.weight"))
    tensors[key][0, 0] = bad
    save_file(tensors, str(saved / WEIGHTS_FILE))
    with pytest.raises(NonFiniteError, match="contains NaN or inf"):
        LoraAdapter.load(saved)


def test_pickle_bin_is_refused_and_never_unpickled(saved, tmp_path):
    tensors = load_file(str(saved / WEIGHTS_FILE))
    (saved / WEIGHTS_FILE).unlink()
    torch.save(tensors, saved / "adapter_model.bin")
    with pytest.raises(AdapterFormatError, match="pickle weights are refused"):
        LoraAdapter.load(saved)
    # opting in reads plain tensors with weights_only=True ...
    assert len(LoraAdapter.load(saved, allow_bin=True).modules) == 14
    # ... which refuses a pickle that would run code
    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    (saved / "adapter_model.bin").write_bytes(pickle.dumps({"x": Exploit()}))
    with pytest.raises(AdapterFormatError, match="not a plain tensor state dict"):
        LoraAdapter.load(saved, allow_bin=True)


def test_not_an_adapter_folder(tmp_path):
    with pytest.raises(AdapterFormatError, match="not a folder"):
        LoraAdapter.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterFormatError, match="no adapter_config.json"):
        LoraAdapter.load(tmp_path / "empty")
    (tmp_path / "empty" / CONFIG_FILE).write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8}))
    with pytest.raises(AdapterFormatError, match="no adapter_model.safetensors"):
        LoraAdapter.load(tmp_path / "empty")


def test_saving_non_finite_factors_is_refused(tiny_model, tmp_path):
    adapter = _trained_adapter(tiny_model())
    next(iter(adapter.modules.values())).B[0, 0] = float("nan")
    with pytest.raises(NonFiniteError):
        adapter.save(tmp_path / "a")
    assert not (tmp_path / "a" / WEIGHTS_FILE).exists()
