"""Import a released SpeechTokenizer / DM-Codec checkpoint as a dmtts codec export.

``dmtts codec import --from speechtokenizer --config config.json --checkpoint ckpt.pt --out DIR``

The public SpeechTokenizer code and the official DM-Codec code (a fork of it) publish models as a
``config.json`` (their keys: ``n_filters``, ``strides`` in decoder order, ``dimension``,
``semantic_dimension``, ...) and a ``.pt`` state dict. Their generator has exactly our layer
layout (SEANet encoder / decoder with 1x1 skip convolutions, BiLSTM, EMA RVQ), so the import is a
renaming of the state dict plus two changes:

* weight norm is folded: their convolutions store ``weight_g`` / ``weight_v`` (the old
  ``torch.nn.utils.weight_norm`` hooks, or ``parametrizations.weight.original0/1`` in newer
  saves); the export holds ``weight = g · v / ||v||`` (norm over all but the output dim);
* the ``transform`` projection (``dimension -> semantic_dimension``, 1024 -> 768 in the released
  models), used only for distillation during their training, has no place in the codec. It is
  written aside to ``semantic_projection.safetensors`` (``weight``, ``bias``) and named in the
  export's ``config.json`` under ``semantic_projection`` (loading the codec ignores it).

The export then loads with :meth:`dmtts.codec.model.DMCodec.from_pretrained` and gives the public
model's codes and waveforms (tested against a random-weight model of the ``speechtokenizer``
package: identical codes, waveforms equal to float rounding).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch

from dmtts.codec.config import CodecModelConfig
from dmtts.codec.model import SEMANTIC_PROJECTION_NAME, DMCodec
from dmtts.errors import DmttsError
from dmtts.utils import atomic_path

SOURCES = ("speechtokenizer", "dm-codec")  # one format: DM-Codec's code is SpeechTokenizer's

# keys of the public config.json that define the generator (the others configure training)
_REQUIRED = ("n_filters", "strides", "dimension", "n_q", "codebook_size", "sample_rate")


def model_config_from_public(cfg: dict, path: str = "config.json") -> CodecModelConfig:
    """Our model config for a public ``config.json`` (dict); unsupported values are errors."""
    missing = [k for k in _REQUIRED if k not in cfg]
    if missing:
        raise DmttsError(f"'{path}' lacks {', '.join(missing)}: pass the config.json released with the checkpoint")
    if str(cfg.get("activation", "ELU")) != "ELU":
        raise DmttsError(f"'{path}': activation '{cfg['activation']}' is not supported (dmtts' SEANet uses ELU)")
    if not cfg.get("bidirectional", True):
        raise DmttsError(f"'{path}': a unidirectional encoder LSTM (bidirectional: false) is not supported")
    return CodecModelConfig(
        sample_rate=int(cfg["sample_rate"]),
        n_filters=int(cfg["n_filters"]),
        dimension=int(cfg["dimension"]),
        strides=[int(s) for s in reversed(cfg["strides"])],  # theirs: decoder order
        n_residual_layers=int(cfg.get("n_residual_layers", 1)),
        residual_kernel_size=int(cfg.get("residual_kernel_size", 3)),
        dilation_base=int(cfg.get("dilation_base", 2)),
        lstm_layers=int(cfg.get("lstm_layers", 2)),
        compress=2,
        true_skip=False,
        n_q=int(cfg["n_q"]),
        codebook_size=int(cfg["codebook_size"]),
        conv_init="torch",
    )


def _fold(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``g · v / ||v||`` with the norm over every dim but 0 (weight_norm's default ``dim=0``)."""
    norm = v.reshape(v.shape[0], -1).norm(dim=1).reshape((-1,) + (1,) * (v.dim() - 1))
    return g * v / norm


_RENAMES = (
    (re.compile(r"\.conv\.conv\."), ".conv."),  # SConv1d -> NormConv1d -> Conv1d
    (re.compile(r"\.convtr\.convtr\."), ".convtr."),
    (re.compile(r"^quantizer\.vq\.layers\.(\d+)\._codebook\."), r"quantizer.layers.\1."),
)


def convert_state_dict(state: dict[str, torch.Tensor], path: str = "checkpoint") -> tuple[dict, dict]:
    """(our folded codec state dict, the ``transform`` projection's tensors) from a public one."""
    out: dict[str, torch.Tensor] = {}
    projection: dict[str, torch.Tensor] = {}
    pending: dict[str, dict[str, torch.Tensor]] = {}  # module prefix -> {"g": .., "v": ..}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise DmttsError(f"'{path}': entry '{key}' is not a tensor; pass the generator's state dict")
        if key.startswith("transform."):
            projection[key[len("transform."):]] = value.float()
            continue
        for pattern, repl in _RENAMES:
            key = pattern.sub(repl, key)
        for g_suffix, v_suffix in ((".weight_g", ".weight_v"),
                                   (".parametrizations.weight.original0", ".parametrizations.weight.original1")):
            if key.endswith(g_suffix):
                pending.setdefault(key[: -len(g_suffix)], {})["g"] = value
                break
            if key.endswith(v_suffix):
                pending.setdefault(key[: -len(v_suffix)], {})["v"] = value
                break
        else:
            out[key] = value
    for prefix, parts in pending.items():
        if set(parts) != {"g", "v"}:
            raise DmttsError(f"'{path}': weight norm of '{prefix}' is incomplete (found only {sorted(parts)})")
        out[prefix + ".weight"] = _fold(parts["g"].float(), parts["v"].float())
    return out, projection


def _load_checkpoint(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DmttsError(f"cannot read checkpoint '{path}': {e}") from None
    if isinstance(state, dict) and isinstance(state.get("generator"), dict):
        state = state["generator"]  # a trainer package (generator + discriminators + ...)
    if not isinstance(state, dict) or not state:
        raise DmttsError(f"'{path}' holds no state dict: pass the released generator checkpoint (.pt)")
    if all(isinstance(k, str) and k.startswith("module.") for k in state):  # saved from a DDP wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def import_public_checkpoint(config: str | Path, checkpoint: str | Path, out_dir: str | Path,
                             source: str = "speechtokenizer", dtype: str = "float32") -> Path:
    """Convert a public ``config.json`` + ``.pt`` into a dmtts codec export at ``out_dir``."""
    from safetensors.torch import save_file

    if source not in SOURCES:
        raise DmttsError(f"--from '{source}' is not supported; choose one of {', '.join(SOURCES)}")
    config, checkpoint = Path(config), Path(checkpoint)
    for what, p in (("--config", config), ("--checkpoint", checkpoint)):
        if not p.is_file():
            raise DmttsError(f"{what} '{p}' does not exist")
    try:
        public_cfg = json.loads(config.read_text())
    except json.JSONDecodeError as e:
        raise DmttsError(f"--config '{config}' is not valid JSON: {e}") from None
    model_cfg = model_config_from_public(public_cfg, str(config))
    state, projection = convert_state_dict(_load_checkpoint(checkpoint), str(checkpoint))

    model = DMCodec(model_cfg).fold_weight_norm()
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing, unexpected = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
    if missing or unexpected or wrong:
        raise DmttsError(
            f"'{checkpoint}' does not match '{config}' as a SpeechTokenizer generator: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, wrong shapes {[(k, got[k], expected[k]) for k in wrong[:3]]}")
    model.load_state_dict(state)
    for layer in model.quantizer.layers:  # a released model's codebooks are initialised
        layer.inited.fill_(1.0)

    extra: dict = {"imported_from": {"source": source, "config": config.name, "checkpoint": checkpoint.name,
                                     "checkpoint_sha256": _sha256(checkpoint)}}
    out_dir = Path(out_dir)
    if projection:
        if set(projection) != {"weight", "bias"}:
            raise DmttsError(f"'{checkpoint}': unexpected transform tensors {sorted(projection)}")
        out_dim, in_dim = projection["weight"].shape
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(out_dir / SEMANTIC_PROJECTION_NAME) as tmp:
            save_file({k: v.contiguous() for k, v in projection.items()}, str(tmp),
                      metadata={"format": "pt", "dmtts": "semantic_projection"})
        extra["semantic_projection"] = {
            "file": SEMANTIC_PROJECTION_NAME, "in_dim": int(in_dim), "out_dim": int(out_dim),
            "applies_to": "RVQ level-1 output [B, T, dimension] (the public model's distillation student)",
        }
    model.eval().save_pretrained(out_dir, dtype=dtype, extra_config=extra)
    return out_dir
