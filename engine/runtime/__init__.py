"""Runtime pieces around a loaded model: static KV cache, sampling, the generation loop."""

from engine.runtime.generation import decode_step, generate_ids, prefill
from engine.runtime.kv_cache import GQALayerCache, KVCache, MLALayerCache
from engine.runtime.sampling import Sampler

__all__ = [
    "GQALayerCache",
    "KVCache",
    "MLALayerCache",
    "Sampler",
    "decode_step",
    "generate_ids",
    "prefill",
]
