"""``dmtts tts train``: train the AR or the NAR model (separate runs, paper §4).

One optimiser step = ``accum_grad`` batches from a lhotse ``DynamicBucketingSampler``
(``max_duration`` seconds of audio each). ScaledAdam + Eden (``dmtts.optim``), optional bf16
autocast, DDP under ``torchrun``. Checkpoints (``exp_dir/checkpoints``) hold model, optimiser,
scheduler, the sampler position (epoch + batches consumed + lhotse's sampler state) and the RNG
states, so ``--resume`` continues exactly where the run stopped. ``exp_dir`` also gets the
resolved ``config.yaml``, tensorboard logs, ``loss.png`` and, at the end, ``export/`` (the model
for ``dmtts synthesize``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch

from dmtts.config import load_config, save_config
from dmtts.errors import DmttsError
from dmtts.tts.config import TTSTrainConfig, resolve_model_config, validate as validate_config

logger = logging.getLogger(__name__)


# -- data -----------------------------------------------------------------------------------
class _SkipFirst(torch.utils.data.Sampler):
    """Yield the batches of ``sampler`` after skipping the first ``skip`` (exact mid-epoch resume).

    The lhotse sampler is deterministic given (seed, epoch), so skipping the consumed batches
    reproduces the uninterrupted order regardless of DataLoader prefetching.
    """

    def __init__(self, sampler, skip: int):
        self.sampler, self.skip = sampler, skip

    def __iter__(self):
        for i, batch in enumerate(self.sampler):
            if i >= self.skip:
                yield batch

    def __len__(self):  # unknown for dynamic samplers
        raise TypeError


def _synced(loader, distributed: bool, device):
    """Batches of ``loader``, ending on every rank as soon as one rank runs out (DDP ranks may
    get a different number of batches from the sampler; a rank waiting alone would hang)."""
    it = iter(loader)
    while True:
        batch = next(it, None)
        if distributed:
            import torch.distributed as dist

            flag = torch.tensor([0 if batch is None else 1], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            if int(flag) == 0:
                return
        elif batch is None:
            return
        yield batch


def load_cuts(path: str, dcfg, what: str):
    from lhotse import CutSet

    from dmtts.data.shar import is_shar_dir, open_shar
    from dmtts.utils import require_file

    keep = _DurationFilter(dcfg.min_duration, dcfg.max_cut_duration)
    if is_shar_dir(path):  # `dmtts shar export`: each rank and worker reads its own shards
        return open_shar(path, keep=keep)
    require_file(path, f"{what} cuts", "tokenize them with 'dmtts tokenize' and phonemize them with 'dmtts phonemize'")
    cuts = CutSet.from_jsonl_lazy(path)  # lazy: Libri-Heavy-size manifests never sit in memory
    return cuts.filter(keep)


class _DurationFilter:
    """Keep cuts with ``lo <= duration <= hi`` (a class, not a lambda: picklable for workers)."""

    def __init__(self, lo: float, hi: float):
        self.lo, self.hi = lo, hi

    def __call__(self, cut) -> bool:
        return self.lo <= cut.duration <= self.hi


def make_sampler(cuts, dcfg, seed, world_size=1, rank=0, train=True):
    from lhotse.dataset import DynamicBucketingSampler, DynamicCutSampler

    from dmtts.data.shar import is_shar_cuts, shar_sampler

    if train and is_shar_cuts(cuts):  # runs in the DataLoader workers, over this rank's shards
        return shar_sampler(cuts, ["codes"], rank, world_size, seed, dcfg.shuffle, dcfg.drop_last,
                            num_buckets=dcfg.num_buckets, max_duration=dcfg.max_duration,
                            buffer_size=dcfg.buffer_size)
    if train:
        return DynamicBucketingSampler(
            cuts,
            max_duration=dcfg.max_duration,
            num_buckets=dcfg.num_buckets,
            shuffle=dcfg.shuffle,
            drop_last=dcfg.drop_last,
            buffer_size=dcfg.buffer_size,
            seed=seed,
            world_size=world_size,
            rank=rank,
        )
    return DynamicCutSampler(cuts, max_duration=dcfg.max_duration, shuffle=False, world_size=world_size, rank=rank)


def make_loader(dataset, sampler, num_workers: int, seed: int):
    from dmtts.data.open_files import check_open_file_limit
    from dmtts.data.shar import is_shar_sampler, shar_loader

    inner = getattr(sampler, "sampler", sampler)  # _SkipFirst wraps the lhotse sampler
    if is_shar_sampler(inner):
        check_open_file_limit(num_workers, 1, "TTS training")
        return shar_loader(dataset, inner, num_workers, seed, skip=getattr(sampler, "skip", 0))
    check_open_file_limit(num_workers, 0, "TTS training")
    gen = torch.Generator().manual_seed(seed)  # keeps DataLoader seeding off the global RNG
    return torch.utils.data.DataLoader(
        dataset, sampler=sampler, batch_size=None, num_workers=num_workers, generator=gen,
        persistent_workers=False,
    )


def check_codes(cuts, mcfg, path, n: int = 20) -> None:
    """Fail early if the stored codes do not fit the model (levels, codebook size)."""
    from dmtts.data.codes import load_codes

    for cut in cuts.subset(first=n):
        codes = load_codes(cut)
        if codes.shape[1] < mcfg.n_q:
            raise DmttsError(f"'{path}': cut '{cut.id}' has {codes.shape[1]} code levels but model.n_q={mcfg.n_q}")
        if codes.size and (codes.max() >= mcfg.codebook_size or codes.min() < 0):
            raise DmttsError(
                f"'{path}': cut '{cut.id}' has code {int(codes.max())} >= model.codebook_size={mcfg.codebook_size}: "
                "set model.codebook_size to the codec's codebook size"
            )


def init_weights(model, kind: str, mcfg, source: str) -> None:
    """Load ``source`` (an exported model directory or a training checkpoint file) into ``model``:
    the ``training.init_from`` start. Any other kind or shape is an error naming the mismatch."""
    from dataclasses import asdict

    from dmtts.tts.config import TTSModelConfig

    path = Path(source)
    if path.is_dir():
        from safetensors.torch import load_file

        from dmtts.tts.export import CONFIG_FILE, WEIGHTS_FILE

        if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
            raise DmttsError(f"training.init_from '{source}' is not an exported TTS model (needs {CONFIG_FILE} and "
                             f"{WEIGHTS_FILE}; export one with 'dmtts tts export')")
        config = json.loads((path / CONFIG_FILE).read_text())
        src_kind, src_model = config.get("kind"), config.get("model", {})
        state = {k: v.float() for k, v in load_file(str(path / WEIGHTS_FILE)).items()}  # float16 storage
    elif path.is_file():
        from dmtts.train.checkpoint import load_checkpoint

        payload = load_checkpoint(path, restore_rng=False)
        src_kind, src_model, state = payload.get("kind"), payload.get("model_config", {}), payload["model"]
    else:
        raise DmttsError(f"training.init_from '{source}' does not exist: give an exported model directory or a "
                         "checkpoint file")
    if src_kind != kind:
        raise DmttsError(f"training.init_from '{source}' holds a {str(src_kind).upper()} model, not {kind.upper()}")
    want = asdict(mcfg)
    diff = {k: (src_model.get(k), v) for k, v in want.items() if k != "dropout" and src_model.get(k) != v}
    if diff:
        detail = ", ".join(f"{k}: {a} there, {b} here" for k, (a, b) in diff.items())
        raise DmttsError(f"training.init_from '{source}' was trained with another model config ({detail}): "
                         "set the same model keys, or train from scratch")
    model.load_state_dict(state)


# -- one step -------------------------------------------------------------------------------
def nar_prompt_and_level(code_lens, n_q, dcfg, generator=None):
    """Per-sample prompt length (a prefix of the utterance) and target level k in 2..n_q."""
    B = code_lens.shape[0]
    u = torch.rand(B, generator=generator)
    frac = dcfg.prompt_min_frac + (dcfg.prompt_max_frac - dcfg.prompt_min_frac) * u
    max_prompt = int(round(dcfg.prompt_max_seconds / 0.02))
    prompt = (frac * code_lens.float()).long().clamp(min=1, max=max_prompt)
    prompt = torch.minimum(prompt, code_lens - 1).clamp(min=0)  # keep >= 1 scored frame
    level = torch.randint(2, n_q + 1, (B,), generator=generator)
    return prompt, level


def compute_loss(model, kind, batch, device, dcfg, n_q, generator=None, acfg=None, step: int = 0):
    """The batch's loss; for the AR with ``acfg`` (alignment aids) on, the aids at ``step`` too."""
    text = batch["text"].to(device)
    text_lens = batch["text_lens"].to(device)
    codes = batch["codes"].to(device)
    code_lens = batch["code_lens"].to(device)
    if kind == "ar":
        if acfg is not None and acfg.enabled:
            from dmtts.tts.align import ar_loss_with_aids

            return ar_loss_with_aids(model, text, text_lens, codes[..., 0], code_lens, acfg, step)
        return model(text, text_lens, codes[..., 0], code_lens)
    prompt, level = nar_prompt_and_level(batch["code_lens"], n_q, dcfg, generator)
    return model(text, text_lens, codes, code_lens, prompt.to(device), level.to(device))


# -- optimiser ------------------------------------------------------------------------------
def build_optimizer(model, ocfg):
    try:
        from dmtts.optim import Eden, ScaledAdam
    except ImportError as e:  # pragma: no cover - the optim package is part of dmtts
        raise DmttsError(f"dmtts.optim (ScaledAdam, Eden) is not available: {e}") from None
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = ScaledAdam(
        params,
        lr=ocfg.base_lr,
        clipping_scale=ocfg.clipping_scale,
        betas=tuple(ocfg.betas),
    )
    scheduler = Eden(optimizer, lr_batches=ocfg.lr_batches, lr_epochs=ocfg.lr_epochs, warmup_batches=ocfg.warmup_batches)
    return optimizer, scheduler


# figures and summary: dmtts/tts/train_report.py (re-exported: existing imports keep working)
from dmtts.tts.train_report import CURVE_COLUMNS, plot_losses, training_summary, write_curve_csv  # noqa: E402,F401


# -- the loop -------------------------------------------------------------------------------
def train(kind: str, config_path: str, exp_dir: str, resume: bool = False, progress: bool = True) -> Path:
    from tqdm import tqdm

    from dmtts.data.tts_dataset import TTSDataset
    from dmtts.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
    from dmtts.train.distributed import all_reduce_sum, barrier, broadcast, cleanup_distributed, init_distributed
    from dmtts.train.tblog import TrainLogger
    from dmtts.tts.export import export_model
    from dmtts.tts.frontend import TTSText
    from dmtts.tts.model import build_model

    if kind not in ("ar", "nar"):
        raise DmttsError(f"--model must be 'ar' or 'nar', got '{kind}'")
    cfg = load_config(config_path, TTSTrainConfig)
    tcfg, dcfg, ocfg = cfg.training, cfg.data, cfg.optim
    try:
        validate_config(cfg)
    except DmttsError as e:
        raise DmttsError(f"{config_path}: {e}") from None
    exp_dir = Path(exp_dir)
    ckpt = latest_checkpoint(exp_dir) if resume else None
    if not resume and latest_checkpoint(exp_dir) is not None:
        raise DmttsError(f"'{exp_dir}' already has checkpoints: pass --resume to continue, or use a new --exp-dir")

    if tcfg.num_threads > 0:
        torch.set_num_threads(tcfg.num_threads)
    dist_info = init_distributed(tcfg.device)
    device = dist_info.device
    torch.manual_seed(tcfg.seed + dist_info.rank)

    text = TTSText.from_data_config(dcfg)
    mcfg = resolve_model_config(cfg)
    if mcfg.text_vocab_size == 0:
        mcfg.text_vocab_size = text.vocab_size
    elif mcfg.text_vocab_size < text.vocab_size:
        raise DmttsError(f"model.text_vocab_size={mcfg.text_vocab_size} is smaller than the symbol table ({text.vocab_size})")
    cfg.model = asdict(mcfg)
    if kind == "ar":
        cfg.align.check(mcfg.n_layers, mcfg.n_heads)
    elif cfg.align.enabled:
        raise DmttsError(f"{config_path}: the align section's aids are for the AR; turn them off for the NAR")
    if dist_info.is_main:
        exp_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, exp_dir / "config.yaml")

    model = build_model(kind, mcfg).to(device)
    if tcfg.init_from and ckpt is None:
        init_weights(model, kind, mcfg, tcfg.init_from)
        logger.info("%s weights initialised from %s", kind.upper(), tcfg.init_from)
    if dist_info.is_main:
        n_params = sum(p.numel() for p in model.parameters())
        logger.info("%s model: %.2fM parameters, %s", kind.upper(), n_params / 1e6, mcfg)
    optimizer, scheduler = build_optimizer(model, ocfg)
    state = {"step": 0, "epoch": 0, "batches_in_epoch": 0, "history": {"train": [], "valid": []}}
    if ckpt is not None:
        payload = load_checkpoint(ckpt, restore_rng=True)
        if payload.get("kind") != kind:
            raise DmttsError(f"checkpoint '{ckpt}' is a {payload.get('kind')} model, not {kind}")
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        state = payload["train_state"]
        if dist_info.rank > 0:  # the checkpoint holds rank 0's RNG; other ranks need their own
            import random

            import numpy as np

            rank_seed = tcfg.seed + 1000003 * dist_info.rank + state["step"]
            torch.manual_seed(rank_seed)
            random.seed(rank_seed)
            np.random.seed(rank_seed % 2**32)
        logger.info("resumed from %s (step %d, epoch %d, batch %d)", ckpt, state["step"], state["epoch"], state["batches_in_epoch"])
    train_model = model
    if dist_info.is_distributed:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    train_cuts = load_cuts(dcfg.train_cuts, dcfg, "training")
    valid_cuts = load_cuts(dcfg.valid_cuts, dcfg, "validation") if dcfg.valid_cuts else None
    check_codes(train_cuts, mcfg, dcfg.train_cuts)
    sampler = make_sampler(train_cuts, dcfg, tcfg.seed, dist_info.world_size, dist_info.rank)
    dataset = TTSDataset(text, n_q=mcfg.n_q)
    tb = TrainLogger(exp_dir / "tensorboard", enabled=dist_info.is_main)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if tcfg.dtype == "bfloat16" else contextlib.nullcontext()
    )
    t_start = time.time()
    elapsed_before = float(state.get("elapsed", 0.0))

    def save(plot: bool = True):
        if dist_info.is_main:
            save_checkpoint(
                exp_dir,
                state["step"],
                {
                    "kind": kind,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "sampler": sampler.state_dict(),
                    "train_state": state,
                    "model_config": asdict(mcfg),
                },
                keep_last=tcfg.keep_last,
            )
            if plot:
                plot_losses(state["history"], exp_dir / "loss.png", kind)
                write_curve_csv(state["history"], exp_dir / "curve.csv")
        barrier()

    probe_holder: list = []  # the AR's alignment probe (main rank), built at the first validation

    def run_probe():
        """The alignment probe on the first validation cuts (AR, main rank only; the other ranks
        skip it and wait in their next collective). Never stops training: errors are logged."""
        if kind != "ar" or not dist_info.is_main:
            return None
        from dmtts.tts.align_probe import AlignmentProbe

        try:
            if not probe_holder:
                probe_holder.append(AlignmentProbe.from_cuts(valid_cuts, dataset, device, seed=tcfg.seed))
            figure = exp_dir / "align" / f"attention_{state['step']:08d}.png"
            return probe_holder[0].measure(model, figure, title=f"step {state['step']}, ")
        except Exception:  # a diagnostic: log it, keep training
            logger.exception("alignment probe failed at step %d", state["step"])
            return None

    def validate():
        if valid_cuts is None:
            return None
        model.eval()
        gen = torch.Generator().manual_seed(tcfg.seed)  # same prompts/levels every time
        vs = make_sampler(valid_cuts, dcfg, tcfg.seed, dist_info.world_size, dist_info.rank, train=False)
        tot = torch.zeros(3, device=device)
        with torch.no_grad(), autocast:
            for batch in make_loader(dataset, vs, 0, tcfg.seed):
                loss, stats = compute_loss(model, kind, batch, device, dcfg, mcfg.n_q, gen)
                f = stats["frames"].float()
                tot += torch.stack([loss.float() * f, stats["acc"].float() * f, f])
        all_reduce_sum(tot)
        model.train()
        n = tot[2].clamp(min=1)
        return float(tot[0] / n), float(tot[1] / n), run_probe()

    def record_valid(values) -> None:
        if values is None:
            return
        vloss, vacc, probe = values
        hist = state["history"]
        hist["valid"].append((state["step"], vloss))
        hist.setdefault("valid_acc", []).append((state["step"], vacc))
        tb.scalars({"loss": vloss, "acc": vacc}, state["step"], prefix="valid/")
        logger.info("step %d: valid loss %.4f, accuracy %.4f", state["step"], vloss, vacc)
        if probe is None:
            return
        for key in ("gap_reversed", "gap_shuffled", "diag_best", "diag_chance"):
            hist.setdefault(key, []).append((state["step"], float(getattr(probe, key))))
        hist.setdefault("diag_heads", []).append((state["step"], probe.diag.tolist()))  # [layer][head]
        tb.scalars(probe.scalars(), state["step"], prefix="align/")
        if probe.image is not None:
            tb.image("align/attention", probe.image, state["step"])
        layer, head = probe.best_head
        logger.info("step %d: alignment gap %.4f (reversed) %.4f (shuffled) nats/frame, best diagonality %.3f "
                    "(L%d H%d; uniform attention: %.3f)", state["step"], probe.gap_reversed, probe.gap_shuffled,
                    probe.diag_best, layer, head, probe.diag_chance)

    def should_stop() -> bool:
        if tcfg.max_steps and state["step"] >= tcfg.max_steps:
            return True
        late = torch.tensor([float(bool(tcfg.max_minutes) and (time.time() - t_start) / 60 >= tcfg.max_minutes)])
        if bool(broadcast(late.to(device))[0]):  # rank 0's clock decides for all ranks
            state["capped"] = True
            return True
        return False

    model.train()
    stop = should_stop()
    pbar = tqdm(desc=f"train {kind}", initial=state["step"], total=tcfg.max_steps or None, disable=not (progress and dist_info.is_main), unit="step")
    # loss*frames, acc*frames, frames since the last log line (checkpointed: exact resume)
    acc_stats = torch.tensor(state.get("log_acc", [0.0, 0.0, 0.0]), device=device)
    while not stop and state["epoch"] < tcfg.num_epochs:
        epoch = state["epoch"]
        sampler.set_epoch(epoch)
        loader = make_loader(dataset, _SkipFirst(sampler, state["batches_in_epoch"]), dcfg.num_workers, tcfg.seed + epoch)
        micro = 0
        for batch in _synced(loader, dist_info.is_distributed, device):
            micro += 1
            is_last_micro = micro % tcfg.accum_grad == 0
            sync = contextlib.nullcontext()
            if dist_info.is_distributed and not is_last_micro:
                sync = train_model.no_sync()
            with sync:
                with autocast:
                    loss, stats = compute_loss(train_model, kind, batch, device, dcfg, mcfg.n_q,
                                               acfg=cfg.align if kind == "ar" else None, step=state["step"])
                (loss / tcfg.accum_grad).backward()
            f = stats["frames"].float()
            acc_stats += torch.stack([stats["loss"].float() * f, stats["acc"].float() * f, f])
            if not math.isfinite(float(stats["loss"])):
                raise DmttsError(f"loss is {float(stats['loss'])} at step {state['step']}: lower optim.base_lr or check the data")
            if not is_last_micro:
                continue
            state["batches_in_epoch"] += tcfg.accum_grad
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            scheduler.step_batch(state["step"])
            pbar.update(1)
            if state["step"] % tcfg.log_interval == 0 or state["step"] == 1:
                all_reduce_sum(acc_stats)
                frames = acc_stats[2].clamp(min=1)
                values = {"loss": float(acc_stats[0] / frames), "acc": float(acc_stats[1] / frames), "lr": scheduler.get_last_lr()[0]}
                values.update({f"align_{k}": float(stats[k]) for k in ("prior_w", "ctc", "guided") if k in stats})
                acc_stats.zero_()
                state["history"]["train"].append((state["step"], values["loss"]))
                state["history"].setdefault("train_acc", []).append((state["step"], values["acc"]))
                state["elapsed"] = elapsed_before + time.time() - t_start  # training seconds, across resumes
                state["history"].setdefault("minutes", []).append((state["step"], state["elapsed"] / 60))
                tb.scalars(values, state["step"], prefix="train/")
                pbar.set_postfix(loss=f"{values['loss']:.3f}", acc=f"{values['acc']:.3f}")
            if tcfg.valid_interval and state["step"] % tcfg.valid_interval == 0:
                record_valid(validate())
            state["log_acc"] = acc_stats.tolist()
            stop = should_stop()
            if stop or (tcfg.save_interval and state["step"] % tcfg.save_interval == 0):
                save()
            if stop:
                break
        else:  # epoch finished
            optimizer.zero_grad(set_to_none=True)  # drop a partial accumulation at epoch end
            state["epoch"] += 1
            state["batches_in_epoch"] = 0
            scheduler.step_epoch(state["epoch"])
            save(plot=False)
    pbar.close()
    final_valid = valid_cuts is not None and (
        not state["history"]["valid"] or state["history"]["valid"][-1][0] != state["step"])
    if final_valid:
        record_valid(validate())
    out = exp_dir / "export"
    latest = latest_checkpoint(exp_dir)
    # re-save after a final validation too: its point (and probe) must survive a --resume
    if final_valid or latest is None or not latest.name.endswith(f"{state['step']:08d}.pt"):
        save(plot=False)
    if dist_info.is_main:
        plot_losses(state["history"], exp_dir / "loss.png", kind)
        write_curve_csv(state["history"], exp_dir / "curve.csv")
        summary = training_summary(state, tcfg)
        if summary["capped"]:
            logger.warning("the wall-clock cap training.max_minutes=%g stopped the %s after %d of %d steps",
                           tcfg.max_minutes, kind.upper(), summary["steps"], tcfg.max_steps)
        from dmtts.utils import atomic_write_text

        atomic_write_text(exp_dir / "train_summary.json", json.dumps(summary, indent=2) + "\n")
        export_model(model, kind, mcfg, text, cfg, out, summary=summary)
        logger.info("exported the %s model to %s", kind.upper(), out)
    tb.close()
    barrier()
    cleanup_distributed()
    return out
