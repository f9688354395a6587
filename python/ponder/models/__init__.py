"""Paged-KV model runner for the Llama family (llama, mistral, qwen2).

* :func:`load_model` reads a Hugging Face checkpoint directory into a :class:`CausalLM`;
  :func:`save_pretrained` writes one back.
* :meth:`CausalLM.step` appends tokens to many sequences of a :class:`~ponder.kv.KVCache`
  in one batched forward; :meth:`CausalLM.start` starts sequences from prompts, reusing
  cached prefixes; :meth:`CausalLM.forward_dense` is the plain causal forward for training.
"""

from ponder.models.config import (SUPPORTED_ACTIVATIONS, SUPPORTED_MODEL_TYPES, SUPPORTED_ROPE_TYPES,
                                  Llama3RopeScaling, ModelConfig)
from ponder.models.llama import CausalLM, StepOutput
from ponder.models.loader import load_model, load_tokenizer, save_pretrained

__all__ = ["CausalLM", "Llama3RopeScaling", "ModelConfig", "StepOutput", "SUPPORTED_ACTIVATIONS",
           "SUPPORTED_MODEL_TYPES", "SUPPORTED_ROPE_TYPES", "load_model", "load_tokenizer", "save_pretrained"]
