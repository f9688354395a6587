"""Hugging Face checkpoint directories to :class:`~ponder.models.CausalLM` and back.

A checkpoint directory holds ``config.json`` and the weights as ``*.safetensors`` (one
file, or shards listed by ``model.safetensors.index.json``), named as transformers'
``LlamaForCausalLM`` / ``MistralForCausalLM`` / ``Qwen2ForCausalLM`` name them.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from ponder.models.config import ModelConfig
from ponder.models.llama import CausalLM

__all__ = ["load_model", "load_tokenizer", "read_weights", "save_pretrained"]

_INDEX = "model.safetensors.index.json"
_WEIGHTS = "model.safetensors"


def load_model(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
               backend: str | None = None, *, lm_head: bool = True, other_weights: tuple[str, ...] = ()) -> CausalLM:
    """Load a Llama / Mistral / Qwen2 checkpoint directory into ponder's model.

    Parameters
    ----------
    path : directory with config.json and ``*.safetensors`` (sharded or not)
    device : where the weights go
    dtype : float32, float16 or bfloat16; checkpoint tensors are converted to it
    backend : KV ops backend for :meth:`CausalLM.step` (default: the best for the device)
    lm_head : False loads the decoder without its output projection (a reward model
        stored with a head of its own instead); a ``lm_head.weight`` in the checkpoint is
        then ignored
    other_weights : name prefixes (e.g. ``("score.",)``) of weights the caller reads
        itself with :func:`read_weights`; they are not reported as unexpected

    Returns
    -------
    CausalLM with fused q/k/v and gate/up projections.

    Raises
    ------
    FileNotFoundError
        No config.json or no safetensors weights.
    ValueError
        An unsupported configuration (model type, RoPE type, activation), or a weight
        that is missing, unexpected or of the wrong shape (the message names it).
    """
    safe_open = _safetensors().safe_open
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory: expected a Hugging Face checkpoint directory "
                                "(config.json + *.safetensors)")
    config = ModelConfig.from_file(path)
    model = CausalLM(config, device="meta", dtype=dtype, backend=backend, lm_head=lm_head)  # shapes only, no init
    expected = {name: tuple(t.shape) for name, t in model.hf_state_dict().items()}
    located = _locate_weights(path)

    missing = [name for name in expected if name not in located]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ValueError(f"checkpoint {path} lacks the weight {missing[0]}{more}, which a {config.model_type} model "
                         f"with this config.json needs")
    # Some tied checkpoints store lm_head.weight anyway.
    ignored = {"lm_head.weight"} if config.tie_word_embeddings or not lm_head else set()
    unexpected = [name for name in located
                  if name not in expected and name not in ignored and not name.endswith("rotary_emb.inv_freq")
                  and not name.startswith(tuple(other_weights))]
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise ValueError(f"checkpoint {path} holds the weight {unexpected[0]}{more}, which a {config.model_type} "
                         "model with this config.json does not have (check attention_bias / mlp_bias / "
                         "tie_word_embeddings)")

    with contextlib.ExitStack() as stack:
        handles = {file: stack.enter_context(safe_open(file, framework="pt", device="cpu"))
                   for file in sorted(set(located[name] for name in expected))}
        for name, shape in expected.items():
            found = tuple(handles[located[name]].get_slice(name).get_shape())
            if found != shape:
                raise ValueError(f"checkpoint weight {name} has shape {list(found)} but the config needs "
                                 f"{list(shape)} (file {located[name].name})")
        model.to_empty(device=device)
        with torch.no_grad():
            for name, target in model.hf_state_dict().items():
                target.copy_(handles[located[name]].get_tensor(name))
    return model


def load_tokenizer(path: str | Path):
    """The ``tokenizers.Tokenizer`` saved as ``tokenizer.json`` in a checkpoint directory."""
    from tokenizers import Tokenizer

    file = Path(path) / "tokenizer.json"
    if not file.is_file():
        raise FileNotFoundError(f"{path} has no tokenizer.json: save the model's tokenizer there or pass tokenizer=")
    return Tokenizer.from_file(str(file))


def read_weights(path: str | Path, prefix: str) -> dict[str, torch.Tensor]:
    """Every weight of the checkpoint directory ``path`` whose name starts with ``prefix``.

    Returns ``{name without the prefix: tensor}`` as stored (dtype and all), on the CPU;
    empty when there is none.
    """
    located = _locate_weights(Path(path))
    out = {}
    for name, file in located.items():
        if name.startswith(prefix):
            with _safetensors().safe_open(file, framework="pt", device="cpu") as handle:
                out[name[len(prefix):]] = handle.get_tensor(name)
    return out


def save_pretrained(model: CausalLM, directory: str | Path, extra: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``model`` as a Hugging Face checkpoint: config.json and model.safetensors.

    Both :func:`load_model` and transformers' ``AutoModelForCausalLM.from_pretrained``
    load the directory into the same model. The weights are stored unfused, in the
    model's dtype. ``extra`` adds weights of the caller's under their own names (a
    reward model's ``score.weight``, read back with :func:`read_weights`). Returns the
    directory (created if needed).
    """
    if not isinstance(model, CausalLM):
        raise TypeError(f"model must be a ponder.models.CausalLM, got {type(model).__name__}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = model.hf_state_dict()
    clash = sorted(set(weights) & set(extra or {}))
    if clash:
        raise ValueError(f"extra weight {clash[0]} has the name of one of the model's own weights")
    tensors = {name: t.detach().to(device="cpu", copy=True, memory_format=torch.contiguous_format)
               for name, t in {**weights, **(extra or {})}.items()}
    _safetensors().torch.save_file(tensors, directory / _WEIGHTS, metadata={"format": "pt"})
    config = model.config.to_dict()
    config["dtype"] = str(model.dtype).removeprefix("torch.")
    with open(directory / "config.json", "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    return directory


def _safetensors():
    """The safetensors package, imported on first use so that ``import ponder`` does not need it."""
    try:
        import safetensors
        import safetensors.torch
    except ImportError as error:
        raise ImportError("reading and writing checkpoints needs the safetensors package: "
                          "pip install safetensors") from error
    return safetensors


def _locate_weights(path: Path) -> dict[str, Path]:
    """Weight name -> the safetensors file holding it (every shard's own header is read)."""
    index = path / _INDEX
    if index.is_file():
        with open(index) as f:
            weight_map = json.load(f).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index} has no weight_map: expected {{'weight_map': {{name: shard file}}}}")
        files = sorted({path / shard for shard in weight_map.values()})
        absent = [f.name for f in files if not f.is_file()]
        if absent:
            raise FileNotFoundError(f"{index} lists the shard {absent[0]}, which is not in {path}")
    else:
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no *.safetensors weights in {path} (PyTorch .bin checkpoints are not "
                                    "supported: convert them to safetensors)")
    located: dict[str, Path] = {}
    for file in files:
        with _safetensors().safe_open(file, framework="pt", device="cpu") as handle:
            for name in handle.keys():
                if name in located:
                    raise ValueError(f"weight {name} is in both {located[name].name} and {file.name}")
                located[name] = file
    return located
