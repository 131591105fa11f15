"""Loading: malformed checkpoints fail with one clear error naming the tensor or file; layer
slices load only their layers; FP8 companions are dequantized; open_weights dispatches."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.errors import UnsupportedModelError, WeightsError
from engine.loaders import open_weights
from engine.loaders.safetensors_source import SafetensorsSource

EXPERT = "model.layers.2.mlp.experts.3.up_proj.weight"


def rewrite(src: Path, dst: Path, edit) -> Path:
    """Copy checkpoint ``src`` to ``dst`` with its tensors passed through ``edit(dict)``."""
    shutil.copytree(src, dst)
    tensors = load_file(dst / "model.safetensors")
    edit(tensors)
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def test_missing_tensor_is_named(checkpoint, load_engine, tmp_path):
    path = rewrite(checkpoint("qwen2_norm"), tmp_path / "m", lambda t: t.pop(EXPERT))
    with pytest.raises(WeightsError, match=EXPERT.replace(".", r"\.")):
        load_engine(path)


def test_wrong_shape_is_named(checkpoint, load_engine, tmp_path):
    name = "model.layers.0.self_attn.kv_b_proj.weight"

    def edit(t):
        t[name] = t[name][:-1].clone()

    path = rewrite(checkpoint("ds3_qlora_norm"), tmp_path / "m", edit)
    with pytest.raises(
        WeightsError, match=re.escape(name) + r".*shape \(127, 32\), expected \(128, 32\)"
    ):
        load_engine(path)


def test_unsupported_architecture_is_named(checkpoint, load_engine, tmp_path):
    path = tmp_path / "m"
    shutil.copytree(checkpoint("qwen2_norm"), path)
    config = json.loads((path / "config.json").read_text())
    config.update(architectures=["LlamaForCausalLM"], model_type="llama")
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError, match="LlamaForCausalLM"):
        load_engine(path)


def test_truncated_safetensors_names_the_file(checkpoint, tmp_path):
    path = tmp_path / "m"
    shutil.copytree(checkpoint("qwen2_norm"), path)
    file = path / "model.safetensors"
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    with pytest.raises(WeightsError, match="model.safetensors"):
        open_weights(path)


def test_layer_slice_loads_only_its_layers(checkpoint, load_engine, tmp_path):
    def drop_last_layer(t):
        for name in [n for n in t if n.startswith("model.layers.2.")]:
            del t[name]

    path = rewrite(checkpoint("ds3_qlora_norm"), tmp_path / "m", drop_last_layer)
    model = load_engine(path, num_layers=2)
    assert model.num_layers == 2
    assert model.forward(torch.tensor([1, 2, 3]), model.new_cache(4)).shape == (256,)
    with pytest.raises(WeightsError, match=r"model\.layers\.2\."):
        load_engine(path)


def test_fp8_tensors_are_dequantized_with_their_scale(tmp_path):
    pytest.importorskip("engine.loaders.fp8")
    weight = (torch.randn(256, 128) * 50).to(torch.float8_e4m3fn)
    scale = torch.tensor([[0.5], [2.0]])
    save_file({"w": weight, "w_scale_inv": scale}, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text("{}")
    source = SafetensorsSource(tmp_path)
    assert source.names() == ["w"]
    got = source.load("w")
    expected = weight.to(torch.float32) * scale.repeat_interleave(128, dim=0)
    torch.testing.assert_close(got, expected)


def test_open_weights_rejects_other_paths(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        open_weights(tmp_path / "nothing")
    other = tmp_path / "model.bin"
    other.write_bytes(b"x")
    with pytest.raises(WeightsError, match="model.bin"):
        open_weights(other)
    with pytest.raises(WeightsError, match="config.json"):
        open_weights(tmp_path)
