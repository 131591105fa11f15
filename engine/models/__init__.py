"""Model code for Qwen2-MoE, DeepSeek-V2/V2.5 and DeepSeek-V3 (no transformers modeling code)."""

from engine.models.config import ModelConfig, parse_model_config
from engine.models.loading import load_model
from engine.models.model import MoECausalLM

__all__ = ["ModelConfig", "MoECausalLM", "load_model", "parse_model_config"]
