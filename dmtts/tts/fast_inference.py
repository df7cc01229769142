"""CPU speed options of synthesis: weight-only fp16/bf16 (``dmtts.tts.transformer.set_linear_dtype``)
and ``torch.ao`` dynamic int8 quantization of the AR's and NAR's linear layers.

Dynamic int8 stores each ``Linear`` weight as int8 with one scale per output row and quantizes the
activations on the fly per call (fbgemm / oneDNN kernels); embeddings, norms, attention, the NAR's
output heads (a parameter, not a ``Linear``) and the codec stay float32.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from dmtts.errors import DmttsError
from dmtts.tts.transformer import Linear

QUANTIZE_CHOICES = ("none", "int8")


def _plain_linears(model: nn.Module) -> nn.Module:
    """Replace every :class:`dmtts.tts.transformer.Linear` by an ``nn.Linear`` holding the same
    float32 weights: ``torch.ao`` swaps only the exact ``nn.Linear`` type."""
    for name, child in list(model.named_children()):
        if isinstance(child, Linear):
            plain = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None)
            plain.weight = nn.Parameter(child.weight.detach().float(), requires_grad=False)
            if child.bias is not None:
                plain.bias = nn.Parameter(child.bias.detach().float(), requires_grad=False)
            setattr(model, name, plain)
        else:
            _plain_linears(child)
    return model


def quantize_linear_int8(model: nn.Module) -> nn.Module:
    """``model`` (an AR or NAR, on the CPU, eval mode) with int8 dynamic-quantized linear layers."""
    if next(model.parameters()).device.type != "cpu":
        raise DmttsError("--quantize int8 runs on the CPU only: drop it, or pass --device cpu")
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch.ao announces its move to torchao on every call
        warnings.simplefilter("ignore")
        return quantize_dynamic(_plain_linears(model.eval()), {nn.Linear}, dtype=torch.qint8)


def apply_quantize(model: nn.Module, quantize: str) -> nn.Module:
    """``quantize``: ``none`` (unchanged) or ``int8`` (:func:`quantize_linear_int8`)."""
    if quantize not in QUANTIZE_CHOICES:
        raise DmttsError(f"--quantize {quantize!r}: choose one of {', '.join(QUANTIZE_CHOICES)}")
    return quantize_linear_int8(model) if quantize == "int8" else model
