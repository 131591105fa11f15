"""GGUF round trip through the engine: the same model exported to GGUF (F16, Q8_0) and loaded
back by the engine gives the safetensors logits within the format's error."""

from __future__ import annotations

import pytest
import torch

from baselines.llamacpp.gguf_export import export_gguf

# (format, max relative L2 error of the logits, min top-1 agreement with safetensors).
# Q8_0 moves every weight by ~0.5%; through 3 layers and the occasional routing flip the
# logits move by 4-7% (measured); a wrong tensor mapping gives ~100%.
FORMATS = [("f16", 0.01, 0.95), ("q8_0", 0.10, 0.80)]
CASES = ["qwen2_nonorm", "ds2_qnull_group_yarn", "ds3_qlora_norm"]


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    cache = model.new_cache(len(ids) + 1)
    return model.forward(ids, cache, all_logits=True)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("fmt,max_rel,min_top1", FORMATS)
def test_gguf_logits_match_safetensors(
    checkpoint, load_engine, tmp_path, case, fmt, max_rel, min_top1
):
    path = checkpoint(case)
    gguf = export_gguf(path, tmp_path / f"{case}.{fmt}.gguf", out_type=fmt, progress=False)
    ids = torch.randint(0, 256, (48,), generator=torch.Generator().manual_seed(7))
    ref = _logits(load_engine(path), ids)
    got = _logits(load_engine(gguf), ids)
    rel = ((got - ref).norm() / ref.norm()).item()
    top1 = (got.argmax(-1) == ref.argmax(-1)).float().mean().item()
    print(f"{case} {fmt}: relative logit error {rel:.4f}, top-1 agreement {top1:.3f}")
    assert rel <= max_rel
    assert top1 >= min_top1
