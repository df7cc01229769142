"""GAN training loop for DM-Codec: ``dmtts codec train --config conf.yaml --exp-dir DIR [--resume]``.

One step: generator forward (codec + distillation projections) -> discriminator update on
(real, detached fake) -> generator update on λ_t·L1 + λ_f·mel + λ_g·adv + λ_fm·fm + λ_w·commit +
λ_distill·distill. Adam for both (lr 1e-4 by default), learning rates ×0.98 per epoch
(``exponential``) or cosine over ``max_steps``.

* DDP via torchrun (gloo on CPU, nccl on GPU); codebooks stay identical across ranks (the RVQ
  all-reduces its EMA statistics and broadcasts k-means / dead-code replacements).
* Checkpoints every ``checkpoint_every`` steps (atomic, last ``keep_last`` kept), and on
  SIGINT/SIGTERM at the end of the current step. ``--resume`` restores models, both optimisers,
  both schedulers, RNG states, the sampler position (epoch + batches consumed; crops are seeded
  per cut) and the step, so a resumed run continues bit-identically.
* Tensorboard scalars, audio and mel images under ``exp_dir/tensorboard``; validation loss;
  the resolved config in ``exp_dir/config.yaml``; at the end a summary of how the reconstruction
  (multi-scale mel) loss fell and ``exp_dir/loss_curve.png``.
"""

from __future__ import annotations

import logging
import signal
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

from dmtts.codec.config import CodecTrainingConfig, checkpoint_model_config
from dmtts.codec.discriminators import Discriminators
from dmtts.codec.distill import Distiller
from dmtts.codec.losses import (MultiResolutionSTFTLoss, MultiScaleMelLoss, commitment_loss, discriminator_adv_loss,
                                feature_matching_loss, generator_adv_loss, waveform_l1)
from dmtts.codec.model import DMCodec
from dmtts.codec.pitch import pitch_loss
from dmtts.codec.rvq import quantizer_dropout_levels
from dmtts.codec.train_report import cap_forecast, loss_summary, plot_losses, run_record, write_summary
from dmtts.config import save_config, to_dict
from dmtts.data.codec_dataset import load_training_cuts
from dmtts.errors import DmttsError
from dmtts.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from dmtts.train.distributed import DistInfo, all_reduce_sum, cleanup_distributed, init_distributed, is_dist

log = logging.getLogger("dmtts.codec.train")

# steps of an invocation after which to forecast where train.max_minutes cuts the cosine schedule
CAP_FORECAST_AFTER_STEPS = 200


class Generator(nn.Module):
    """Codec + distillation projections: one module so DDP syncs all generator gradients."""

    def __init__(self, codec: DMCodec, distiller: Distiller):
        super().__init__()
        self.codec, self.distiller = codec, distiller

    def forward(self, wav, lm_feats=None, sm_feats=None, decoder_levels=None):
        out = self.codec(wav, decoder_levels=decoder_levels)
        distill, parts = self.distiller(out.levels, lm_feats, sm_feats)
        return out, distill, parts


class CodecTrainer:
    def __init__(self, cfg: CodecTrainingConfig, exp_dir: str | Path, resume: bool = False,
                 dist: DistInfo | None = None, progress: bool = True):
        self.cfg, self.exp_dir, self.resume, self.progress = cfg, Path(exp_dir), resume, progress
        self.dist = dist or init_distributed(cfg.train.device)
        self.device = self.dist.device
        if cfg.train.num_threads > 0:
            torch.set_num_threads(cfg.train.num_threads)
        torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
        self.codec = DMCodec(cfg.model).to(self.device)
        self.codec.quantizer.residual_gradient = cfg.loss.commit_residual_gradient
        self.distiller = Distiller(cfg.distill, cfg.model.dimension).to(self.device)
        self.gen = Generator(self.codec, self.distiller)
        self.disc = Discriminators(cfg.discriminator).to(self.device)
        self.mel_loss = MultiScaleMelLoss.from_config(cfg.loss, cfg.model.sample_rate)
        self.stft_loss = MultiResolutionSTFTLoss(cfg.loss.stft_ffts).to(self.device) if cfg.loss.lambda_stft > 0 else None
        if self.dist.is_distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            # buffers (codebooks) are kept identical by the RVQ itself: no per-step broadcast
            self.gen_ddp = DDP(self.gen, device_ids=ids, broadcast_buffers=False)
            self.disc_ddp = DDP(self.disc, device_ids=ids, broadcast_buffers=False)
        else:
            self.gen_ddp, self.disc_ddp = self.gen, self.disc
        t = cfg.train
        self.opt_g = torch.optim.Adam(self.gen.parameters(), lr=t.lr, betas=tuple(t.betas))
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=t.lr, betas=tuple(t.betas))
        if t.scheduler == "cosine":
            floor = t.lr * t.lr_min_ratio
            self.sched_g = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt_g, T_max=t.max_steps, eta_min=floor)
            self.sched_d = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt_d, T_max=t.max_steps, eta_min=floor)
        else:
            self.sched_g = torch.optim.lr_scheduler.ExponentialLR(self.opt_g, gamma=t.lr_decay)
            self.sched_d = torch.optim.lr_scheduler.ExponentialLR(self.opt_d, gamma=t.lr_decay)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.history: list[dict] = []  # per step: step, elapsed (s, across resumes), mel, wav_l1, gen, disc
        self.elapsed = 0.0  # training seconds before this invocation (from the checkpoint)
        self._stop = False
        self.capped = False  # set when train.max_minutes stops the run before max_steps
        self.cap_forecast: str | None = None  # the warning of _forecast_cap, if any
        self.logger = None

    # -- data ------------------------------------------------------------------------------------
    def _dataset(self, random_crop: bool):
        from dmtts.data.codec_dataset import CodecCropDataset

        d = self.distiller
        return CodecCropDataset(self.cfg.data.crop_seconds, self.cfg.model.sample_rate, load_lm=d.uses_lm,
                                load_sm=d.uses_sm, random_crop=random_crop, seed=self.cfg.train.seed)

    def _train_loader(self):
        from torch.utils.data import DataLoader

        from dmtts.data import shar
        from dmtts.data.codec_dataset import SkipBatches, make_sampler
        from dmtts.data.open_files import check_open_file_limit

        dc = self.cfg.data
        if shar.is_shar_cuts(self.train_cuts):
            d = self.distiller
            fields = ["recording"] + ["lm_feats"] * d.uses_lm + ["sm_feats"] * d.uses_sm
            check_open_file_limit(dc.num_workers, len(fields), "codec training")
            self.train_sampler = shar.shar_sampler(
                self.train_cuts, fields, self.dist.rank, self.dist.world_size, self.cfg.train.seed, dc.shuffle,
                dc.drop_last, bucketing=dc.sampler == "dynamic_bucketing", num_buckets=dc.num_buckets,
                max_cuts=dc.batch_size)
            self.train_sampler.set_epoch(self.epoch)
            self.train_ds.set_epoch(self.epoch)
            batches = shar.shar_loader(self.train_ds, self.train_sampler, dc.num_workers,
                                       self.cfg.train.seed + self.epoch, skip=self.batch_in_epoch)
            return shar.synced_batches(batches, self.device) if self.dist.is_distributed else batches
        check_open_file_limit(dc.num_workers, 0, "codec training")
        self.train_sampler = make_sampler(self.train_cuts, dc.batch_size, dc.crop_seconds, dc.sampler, dc.shuffle,
                                          dc.drop_last, dc.num_buckets, self.cfg.train.seed,
                                          self.dist.world_size, self.dist.rank)
        self.train_sampler.set_epoch(self.epoch)
        self.train_ds.set_epoch(self.epoch)
        return DataLoader(self.train_ds, sampler=SkipBatches(self.train_sampler, self.batch_in_epoch),
                          batch_size=None, num_workers=dc.num_workers, persistent_workers=False,
                          # its own generator: creating an iterator must not draw from the global
                          # RNG, or a resumed run would diverge from an uninterrupted one
                          generator=torch.Generator().manual_seed(self.cfg.train.seed + self.epoch))

    # -- checkpoints ---------------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "generator": self.codec.state_dict(),
            "distiller": self.distiller.state_dict(),
            "discriminator": self.disc.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "sched_g": self.sched_g.state_dict(),
            "sched_d": self.sched_d.state_dict(),
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "history": self.history,
            "config": to_dict(self.cfg),
            "capped": self.capped,
        }

    def save(self) -> Path | None:
        path = None
        if self.dist.is_main:
            path = save_checkpoint(self.exp_dir, self.step, self.state(), keep_last=self.cfg.train.keep_last)
            log.info("saved checkpoint %s", path)
        return path

    def load(self, path: Path) -> None:
        ckpt = load_checkpoint(path, restore_rng=True)
        if checkpoint_model_config(ckpt.get("config", {}).get("model")) != to_dict(self.cfg)["model"]:
            raise DmttsError(f"checkpoint '{path}' was trained with a different model config; "
                             "use a new --exp-dir or the original config")
        self.codec.load_state_dict(ckpt["generator"])
        self.distiller.load_state_dict(ckpt["distiller"])
        self.disc.load_state_dict(ckpt["discriminator"])
        self.opt_g.load_state_dict(ckpt["opt_g"])
        self.opt_d.load_state_dict(ckpt["opt_d"])
        self.sched_g.load_state_dict(ckpt["sched_g"])
        self.sched_d.load_state_dict(ckpt["sched_d"])
        self.step, self.epoch = int(ckpt["step"]), int(ckpt["epoch"])
        self.batch_in_epoch = int(ckpt["batch_in_epoch"])
        self.history = list(ckpt.get("history", []))
        self.capped = False  # a resumed run is capped only if this invocation hits the cap again
        self.elapsed = float(self.history[-1].get("elapsed", 0.0)) if self.history else 0.0
        log.info("resumed from %s (step %d, epoch %d)", path, self.step, self.epoch)

    # -- one step --------------------------------------------------------------------------------------
    def _autocast(self):
        if not self.cfg.train.bf16:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def train_step(self, batch: dict) -> dict[str, float]:
        c = self.cfg.loss
        x = batch["audio"].to(self.device)
        lm = batch["lm_feats"].to(self.device) if batch.get("lm_feats") is not None else None
        sm = batch["sm_feats"].to(self.device) if batch.get("sm_feats") is not None else None
        self.gen_ddp.train()
        self.disc_ddp.train()
        decoder_levels = self.decoder_levels(self.step)
        with self._autocast():
            out, distill, parts = self.gen_ddp(x, lm, sm, decoder_levels=decoder_levels)
        x_hat = out.wav.float()
        adversarial = self.step >= self.cfg.train.adversarial_start_step
        if adversarial:
            d_loss, adv, fm = self._adversarial_step(x, x_hat)
        else:  # reconstruction-only warm-up: the discriminators wait
            d_loss = adv = fm = torch.zeros((), device=self.device)
        mel = self.mel_loss(x, x_hat)
        wav = waveform_l1(x, x_hat)
        stft = self.stft_loss(x, x_hat) if self.stft_loss is not None else torch.zeros((), device=self.device)
        commit = commitment_loss(out.commit_loss, len(out.levels), c.commitment_reduction)
        f0 = voicing = torch.zeros((), device=self.device)
        pitch_stats: dict[str, float] = {}
        if out.pitch is not None and (c.lambda_f0 > 0 or c.lambda_voicing > 0):
            m = self.cfg.model
            f0, voicing, pitch_stats = pitch_loss(out.pitch, x, m.sample_rate, self.codec.hop_length,
                                                  m.harmonic_f0_min, m.harmonic_f0_max, out.pitch_track)
        g_loss = (c.lambda_adv * adv + c.lambda_fm * fm + c.lambda_mel * mel + c.lambda_wav * wav
                  + c.lambda_stft * stft + c.lambda_commit * commit + c.lambda_distill * distill
                  + c.lambda_f0 * f0 + c.lambda_voicing * voicing)
        if not torch.isfinite(g_loss):
            raise DmttsError(f"generator loss is not finite at step {self.step + 1}; lower train.lr or "
                             "enable train.grad_clip, then --resume from the last checkpoint")
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self._clip(self.gen)
        self.opt_g.step()
        if self.cfg.train.scheduler == "cosine":
            self._step_schedulers()
        stats = {"gen": g_loss.item(), "disc": d_loss.item(), "adv": adv.item(), "fm": fm.item(),
                 "mel": mel.item(), "wav_l1": wav.item(), "stft": stft.item(), "commit": commit.item(), "distill": float(distill.detach()),
                 "dead_codes": float(out.dead_codes), "decoder_levels": float(decoder_levels or len(out.levels)), **parts}
        if pitch_stats:
            stats.update(f0_l1=f0.item(), voicing_bce=voicing.item(), **pitch_stats)
        self._last_codes, self._last_replaced = out.codes.detach(), out.replaced
        self._last = (x[0], x_hat[0].detach())
        return stats

    def decoder_levels(self, step: int) -> int | None:
        """Quantizer dropout: how many levels the decoder gets at ``step`` (None: all)."""
        t = self.cfg.train
        return quantizer_dropout_levels(t.quantizer_dropout, self.cfg.model.n_q, t.seed, step)

    def _step_schedulers(self) -> None:
        """Advance both learning-rate schedules together, so that discriminators that start late
        (``train.adversarial_start_step``), or never start, still get the generator's rate at that step."""
        self.sched_g.step()
        with warnings.catch_warnings():
            # until the discriminators' first update, torch warns that their schedule steps
            # before their optimizer: intended here, and noise in every reconstruction-only run
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
            self.sched_d.step()

    def _adversarial_step(self, x: torch.Tensor, x_hat: torch.Tensor):
        """Update the discriminators on (real, detached fake); return (disc loss, generator
        adversarial loss, feature matching loss) for the generator's update."""
        c = self.cfg.loss
        with self._autocast():
            logits, _ = self.disc_ddp(torch.cat([x, x_hat.detach()], dim=0))
        b = x.shape[0]
        d_loss = discriminator_adv_loss([l[:b] for l in logits], [l[b:] for l in logits], c.adversarial)
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self._clip(self.disc)
        self.opt_d.step()
        # generator: the plain discriminator module with frozen parameters (no wasted D gradients)
        for p in self.disc.parameters():
            p.requires_grad_(False)
        try:
            with self._autocast():
                with torch.no_grad():
                    _, real_fmaps = self.disc(x)
                fake_logits, fake_fmaps = self.disc(x_hat)
        finally:
            for p in self.disc.parameters():
                p.requires_grad_(True)
        adv = generator_adv_loss(fake_logits, c.adversarial)
        fm = feature_matching_loss(real_fmaps, fake_fmaps, c.feature_matching)
        return d_loss, adv, fm

    def _clip(self, module: nn.Module) -> None:
        if self.cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(module.parameters(), self.cfg.train.grad_clip)

    # -- validation --------------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict[str, float] | None:
        if self.valid_cuts is None:
            return None
        from torch.utils.data import DataLoader

        from dmtts.data.codec_dataset import make_sampler

        dc = self.cfg.data
        sampler = make_sampler(self.valid_cuts, dc.batch_size, dc.crop_seconds, "simple", False, False,
                               world_size=self.dist.world_size, rank=self.dist.rank)
        loader = DataLoader(self._dataset(random_crop=False), sampler=sampler, batch_size=None)
        self.gen.eval()
        sums = torch.zeros(4, device=self.device)
        for i, batch in enumerate(loader):
            if i >= dc.max_valid_batches:
                break
            x = batch["audio"].to(self.device)
            lm = batch["lm_feats"].to(self.device) if batch["lm_feats"] is not None else None
            sm = batch["sm_feats"].to(self.device) if batch["sm_feats"] is not None else None
            out, distill, _ = self.gen(x, lm, sm)
            sums += torch.tensor([self.mel_loss(x, out.wav).item(), waveform_l1(x, out.wav).item(),
                                  float(distill), 1.0], device=self.device)
        self.gen.train()
        all_reduce_sum(sums)
        n = max(float(sums[3]), 1.0)
        return {"mel": float(sums[0]) / n, "wav_l1": float(sums[1]) / n, "distill": float(sums[2]) / n}

    # -- main loop -------------------------------------------------------------------------------------------
    def _install_signals(self):
        def handler(signum, frame):
            if self._stop:  # second signal: give up immediately (checkpoints stay intact: atomic)
                raise KeyboardInterrupt
            log.warning("signal %d received: finishing this step, saving a checkpoint, exiting", signum)
            self._stop = True

        old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                old[sig] = signal.signal(sig, handler)
            except ValueError:  # not in the main thread
                pass
        return old

    def _should_stop(self) -> bool:
        flag = torch.tensor([1.0 if self._stop else 0.0])
        if is_dist():
            flag = flag.to(self.device)
            all_reduce_sum(flag)
        return bool(flag.item() > 0)

    def run(self) -> dict:
        cfg, t = self.cfg, self.cfg.train
        self.train_cuts = load_training_cuts(cfg.data.train_cuts, "train_cuts")
        self.valid_cuts = load_training_cuts(cfg.data.valid_cuts, "valid_cuts") if cfg.data.valid_cuts else None
        self.train_ds = self._dataset(random_crop=True)
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        if self.resume:
            ckpt = latest_checkpoint(self.exp_dir)
            if ckpt is None:
                log.warning("--resume: no checkpoint in %s, starting from scratch", self.exp_dir)
            else:
                self.load(ckpt)
        elif latest_checkpoint(self.exp_dir) is not None:
            raise DmttsError(f"'{self.exp_dir}' already holds checkpoints: pass --resume to continue that run "
                             "or choose a new --exp-dir")
        if self.dist.is_main:
            save_config(cfg, self.exp_dir / "config.yaml")
        from dmtts.train.tblog import TrainLogger

        self.logger = TrainLogger(self.exp_dir / "tensorboard", enabled=self.dist.is_main)
        old_handlers = self._install_signals()
        from tqdm import tqdm

        pbar = tqdm(total=t.max_steps if t.max_steps > 0 else None, initial=self.step, desc="codec train",
                    unit="step", dynamic_ncols=True, disable=not (self.progress and self.dist.is_main))
        t0 = self._t0 = time.time()
        interrupted = False
        last_saved = first_step = self.step
        try:
            while self.epoch < t.num_epochs and not self._done():
                n_batches = 0
                for batch in self._train_loader():
                    n_batches += 1
                    stats = self.train_step(batch)
                    self.step += 1
                    self.batch_in_epoch += 1
                    self.history.append({"step": self.step, "elapsed": self.elapsed + time.time() - t0,
                                         **{k: stats[k] for k in ("mel", "wav_l1", "gen", "disc")}})
                    self._log(stats, pbar)
                    if self.step - first_step == CAP_FORECAST_AFTER_STEPS:
                        self._forecast_cap(CAP_FORECAST_AFTER_STEPS, time.time() - t0)
                    if t.valid_every > 0 and self.step % t.valid_every == 0:
                        self._log_valid()
                    if t.checkpoint_every > 0 and self.step % t.checkpoint_every == 0:
                        self.save()
                        last_saved = self.step
                    if self._should_stop():
                        interrupted = True
                        break
                    if self._done():
                        break
                else:  # epoch finished
                    if n_batches == 0 and self.batch_in_epoch == 0:
                        raise DmttsError(
                            f"data.train_cuts '{cfg.data.train_cuts}' gives no batch of data.batch_size="
                            f"{cfg.data.batch_size} cuts on this rank: lower data.batch_size or set "
                            "data.drop_last: false")
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    if t.scheduler == "exponential":
                        self._step_schedulers()
                    continue
                break
            if self.step != last_saved:
                self.save()
        finally:
            for sig, h in old_handlers.items():
                signal.signal(sig, h)
            if pbar is not None:
                pbar.close()
            if self.logger is not None:
                self.logger.close()
        # training time of the whole run (across resumes), not just of this invocation
        seconds = float(self.history[-1].get("elapsed", 0.0)) if self.history else time.time() - t0
        summary = self.summary(interrupted, seconds)
        return summary

    def _done(self) -> bool:
        t = self.cfg.train
        if t.max_steps > 0 and self.step >= t.max_steps:
            return True
        if t.max_minutes > 0:
            over = time.time() - self._t0 >= 60.0 * t.max_minutes
            flag = torch.tensor([1.0 if over else 0.0], device=self.device)
            all_reduce_sum(flag)  # every rank stops at the same step
            if flag.item() > 0:
                if self.dist.is_main:
                    log.warning("train.max_minutes=%g reached at step %d: saving and stopping", t.max_minutes,
                                self.step)
                self.capped = True
                return True
        return False

    def _log(self, stats: dict, pbar) -> None:
        t = self.cfg.train
        if pbar is not None:
            pbar.update(1)
            if self.step % max(1, t.log_every) == 0:
                pbar.set_postfix(mel=f"{stats['mel']:.3f}", l1=f"{stats['wav_l1']:.4f}", g=f"{stats['gen']:.2f}",
                                 d=f"{stats['disc']:.3f}", refresh=False)
        if self.step % max(1, t.log_every) == 0:
            self.logger.scalars(stats, self.step, prefix="train/")
            self.logger.scalars({"lr": self.opt_g.param_groups[0]["lr"]}, self.step, prefix="train/")
            from dmtts.codec.rvq import codebook_health

            health = codebook_health(self._last_codes, self._last_replaced, self.cfg.model.codebook_size)
            self.logger.scalars(health, self.step, prefix="codebook/")
        if t.tb_audio_every > 0 and self.step % t.tb_audio_every == 0 and self.dist.is_main:
            from dmtts.audio import mel_spectrogram

            x, x_hat = self._last
            self.logger.audio("audio/original", x, self.step, self.cfg.model.sample_rate)
            self.logger.audio("audio/reconstruction", x_hat, self.step, self.cfg.model.sample_rate)
            for tag, w in (("mel/original", x), ("mel/reconstruction", x_hat)):
                self.logger.mel_image(tag, mel_spectrogram(w.reshape(-1).cpu(), self.cfg.model.sample_rate), self.step)
            self.logger.flush()

    def _forecast_cap(self, steps_done: int, seconds: float) -> None:
        """Say early where the wall-clock cap will stop the cosine schedule and which max_steps would
        end inside it (which is better is a measurement: docs/quality.md, "A schedule that fits the budget")."""
        forecast = cap_forecast(steps_done, seconds, self.step, self.cfg.train)
        if forecast is None or not self.dist.is_main:
            return
        self.cap_forecast = forecast.message(self.cfg.train.max_minutes)
        log.warning(self.cap_forecast)

    def _log_valid(self) -> None:
        v = self.validate()
        if v is None:
            return
        self.logger.scalars(v, self.step, prefix="valid/")
        if self.dist.is_main:
            log.info("step %d validation: mel %.4f wav_l1 %.5f distill %.4f", self.step, v["mel"], v["wav_l1"],
                     v["distill"])
        self.last_valid = v

    def summary(self, interrupted: bool, seconds: float) -> dict:
        res = {"steps": self.step, "epochs": self.epoch, "interrupted": interrupted, "seconds": seconds,
               **run_record(self.step, self.epoch, seconds, self.cfg.train, self.capped), **loss_summary(self.history)}
        if self.cap_forecast:
            res["cap_forecast"] = self.cap_forecast
        if self.dist.is_main:
            write_summary(self.exp_dir, res)
            if len(self.history) >= 2:
                plot_losses(self.history, self.exp_dir / "loss_curve.png")
        return res


def train(cfg: CodecTrainingConfig, exp_dir: str | Path, resume: bool = False, progress: bool = True) -> dict:
    trainer = CodecTrainer(cfg, exp_dir, resume, progress=progress)
    try:
        return trainer.run()
    finally:
        cleanup_distributed()
