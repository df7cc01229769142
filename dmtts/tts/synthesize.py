"""Zero-shot synthesis: prompt (3 s of audio + its transcript) + text -> speech (VALL-E style).

1. text ids = ``<bos> symbols(prompt text) symbols(target text) <eos>``;
2. prompt codes = ``codec.encode(prompt audio)`` (all ``n_q`` levels);
3. AR samples level 1 after the prompt's level 1 (KV cache) until ``<eos>`` or
   ``max_len_ratio`` frames per target-text token;
4. NAR predicts levels 2..n_q greedily, conditioned on the prompt's codes and the text;
5. ``codec.decode`` of the generated frames (the prompt is not included in the output).

Everything runs under ``torch.inference_mode()``; items are synthesized in batches.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dmtts.errors import DmttsError

logger = logging.getLogger(__name__)

MIN_PROMPT_SECONDS = 1.0


@dataclass
class SynthesisItem:
    text: str
    prompt_wav: np.ndarray  # float32 16 kHz mono, already cut to the prompt length
    prompt_text: str
    name: str = ""


def prepare_prompt(wav: np.ndarray, sample_rate: int, max_seconds: float = 3.0, what: str = "prompt audio") -> np.ndarray:
    """Cut the prompt to ``max_seconds``; a clear error if it is shorter than 1 s."""
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    seconds = len(wav) / sample_rate
    if seconds < MIN_PROMPT_SECONDS:
        raise DmttsError(
            f"{what} is {seconds:.2f} s long: zero-shot synthesis needs a prompt of at least "
            f"{MIN_PROMPT_SECONDS:.0f} s (3 s recommended) of the target speaker"
        )
    if max_seconds and max_seconds > 0:
        wav = wav[: int(round(max_seconds * sample_rate))]
    return wav


class Synthesizer:
    def __init__(
        self,
        ar_dir,
        nar_dir,
        codec,
        device: str = "cpu",
        top_k: int = 50,
        top_p: float = 1.0,
        temperature: float = 1.0,
        max_len_ratio: float | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        from dmtts.tts.export import load_exported

        self.device = torch.device(device)
        self.ar, self.text, ar_cfg = load_exported(ar_dir, "ar", self.device, dtype)
        self.nar, nar_text, _ = load_exported(nar_dir, "nar", self.device, dtype)
        if nar_text.frontend.symbol_table != self.text.frontend.symbol_table:
            raise DmttsError(f"the AR model '{ar_dir}' and the NAR model '{nar_dir}' use different symbol tables: train both on the same phonemized cuts")
        if isinstance(codec, (str, Path)):
            from dmtts.codec.model import load_codec

            codec = load_codec(codec, self.device)
        self.codec = codec.to(self.device).eval()
        ccfg = codec.config
        for name, model in (("AR", self.ar), ("NAR", self.nar)):
            if model.cfg.codebook_size != ccfg.codebook_size or model.cfg.n_q > ccfg.n_q:
                raise DmttsError(
                    f"the {name} model expects {model.cfg.n_q} levels of {model.cfg.codebook_size} codes but the codec has "
                    f"{ccfg.n_q} levels of {ccfg.codebook_size}: use the codec the training cuts were tokenized with"
                )
        self.n_q = self.nar.cfg.n_q
        self.sample_rate = codec.sample_rate
        self.hop = codec.hop_length
        self.top_k, self.top_p, self.temperature = top_k, top_p, temperature
        inf = ar_cfg.get("inference", {})
        self.max_len_ratio = max_len_ratio or inf.get("max_len_ratio", 10.0)
        self.min_len_ratio = inf.get("min_len_ratio", 0.0)
        self.max_seconds = 40.0

    @torch.inference_mode()
    def synthesize(self, items: list[SynthesisItem], generator: torch.Generator | None = None) -> list[np.ndarray]:
        """Synthesize a batch; returns one float32 waveform per item."""
        if not items:
            return []
        dev = self.device
        seqs, n_target = [], []
        for it in items:
            where = f" of '{it.name}'" if it.name else ""
            try:
                target = self.text.text_symbols(it.text)
            except DmttsError as e:
                raise DmttsError(f"target text{where} {it.text!r}: {e}") from None
            try:
                prompt = self.text.text_symbols(it.prompt_text)
            except DmttsError as e:
                raise DmttsError(f"prompt transcript{where} {it.prompt_text!r}: {e}") from None
            # the same sequence training sees for one utterance: words separated by boundaries
            seqs.append(self.text.join_words(prompt, target))
            n_target.append(len(target))
        text, text_lens = self.text.collate(seqs)
        # prompt codes, one prompt at a time (no padding artefacts), then padded for the batch
        prompt_codes = [
            self.codec.encode(torch.from_numpy(it.prompt_wav)[None, None].to(dev), n_q=self.n_q)[0].T for it in items
        ]
        prompt_lens = torch.tensor([len(c) for c in prompt_codes], device=dev)
        codes = torch.zeros(len(items), int(prompt_lens.max()), self.n_q, dtype=torch.long, device=dev)
        for i, c in enumerate(prompt_codes):
            codes[i, : len(c)] = c
        n_target_t = torch.tensor(n_target, device=dev, dtype=torch.float32)
        max_frames = int(self.max_seconds * self.sample_rate / self.hop)
        max_new = (n_target_t * self.max_len_ratio).ceil().long().clamp(1, max_frames)
        min_new = (n_target_t * self.min_len_ratio).floor().long().clamp(min=1)
        min_new = torch.minimum(min_new, max_new)
        text, text_lens = text.to(dev), text_lens.to(dev)
        level1 = self.ar.generate(
            text, text_lens, codes[..., 0], prompt_lens, max_new, min_new,
            top_k=self.top_k, top_p=self.top_p, temperature=self.temperature, generator=generator,
        )
        l1_lens = torch.tensor([len(x) for x in level1], device=dev)
        l1 = torch.zeros(len(items), int(l1_lens.max()), dtype=torch.long, device=dev)
        for i, x in enumerate(level1):
            l1[i, : len(x)] = x
        full = self.nar.generate(text, text_lens, codes, prompt_lens, l1, l1_lens)
        out = []
        for x in full:  # decode one by one: no padding artefacts, bounded memory
            y = self.codec.decode(x.T[None].to(dev))
            out.append(y[0, 0].float().cpu().numpy())
        return out


def parse_asr_arg(spec: str | None):
    """``--asr BACKEND[:DIR]`` -> an ASR object, or None."""
    if not spec:
        return None
    from dmtts.teachers.asr import load_asr_spec

    asr = load_asr_spec(spec)
    if asr is None:
        raise DmttsError("--asr reference has no meaning for synthesis: pass --prompt-text, or an ASR such as --asr faster-whisper")
    return asr


def transcribe_prompt(asr, wav: np.ndarray, where: str) -> str:
    """ASR transcript of a prompt; an error if it holds no words."""
    text = asr.transcribe([wav])[0]
    logger.info("prompt transcript (%s) of %s: %s", asr.name, where, text)
    if not any(ch.isalnum() for ch in text):
        raise DmttsError(
            f"the ASR ({asr.name}) heard no words in {where} (got {text!r}): pass --prompt-text, "
            "or use a prompt with clear speech"
        )
    return text


def _no_prompt_text_error(where: str) -> DmttsError:
    return DmttsError(
        f"{where} has no prompt transcript: pass --prompt-text \"...\" (the words spoken in the first 3 s of the "
        "prompt), or let an ASR transcribe it with --asr faster-whisper (bundled Whisper tiny.en) or --asr BACKEND:DIR"
    )


def synthesize_one(args) -> Path:
    """``dmtts synthesize --text ... --prompt-audio ... --out ...``."""
    from dmtts.audio import load_audio, save_audio
    from dmtts.text.normalize import check_not_empty
    from dmtts.utils import require_file

    check_not_empty(args.text, "--text")
    require_file(args.prompt_audio, "--prompt-audio", "pass a wav/flac file with at least 1 s of the target speaker")
    if args.prompt_text is not None:
        check_not_empty(args.prompt_text, "--prompt-text")
    synth = _make_synth(args)
    wav, _ = load_audio(args.prompt_audio, synth.sample_rate)
    prompt = prepare_prompt(wav, synth.sample_rate, args.prompt_seconds, f"--prompt-audio '{args.prompt_audio}'")
    prompt_text = args.prompt_text
    if prompt_text is None:
        asr = parse_asr_arg(args.asr)
        if asr is None:
            raise _no_prompt_text_error(f"--prompt-audio '{args.prompt_audio}'")
        prompt_text = transcribe_prompt(asr, prompt, f"--prompt-audio '{args.prompt_audio}'")
    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    out = synth.synthesize([SynthesisItem(args.text, prompt, prompt_text)], gen)[0]
    save_audio(args.out, out, synth.sample_rate)
    logger.info("wrote %s (%.2f s)", args.out, len(out) / synth.sample_rate)
    return Path(args.out)


def synthesize_pairs(args) -> Path:
    """``dmtts synthesize --pairs PAIRS --out-dir DIR``: one wav per pair (and repeat) + manifest."""
    from lhotse import CutSet
    from tqdm import tqdm

    from dmtts.audio import save_audio
    from dmtts.data.subsets import load_prompt_audio
    from dmtts.utils import atomic_write_text, require_file

    require_file(args.pairs, "--pairs", "make it with 'dmtts subset librispeech-tts-eval' or 'dmtts subset vctk-tts-eval'")
    cuts = CutSet.from_file(args.pairs).to_eager()
    for c in cuts:
        if not c.custom or "target_text" not in c.custom or "prompt_recording" not in c.custom:
            raise DmttsError(f"--pairs '{args.pairs}': cut '{c.id}' has no target_text/prompt_recording: it is not a TTS evaluation pair manifest")
    if args.repeats < 1:
        raise DmttsError("--repeats must be >= 1")
    synth = _make_synth(args)
    asr = parse_asr_arg(args.asr)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)

    jobs, records = [], []
    for c in cuts:  # (cut, prompt wav, prompt text) once per pair
        prompt = prepare_prompt(load_prompt_audio(c, synth.sample_rate), synth.sample_rate, args.prompt_seconds, f"prompt of pair '{c.id}'")
        prompt_text = c.custom.get("prompt_text")
        if not prompt_text:
            if asr is None:
                raise _no_prompt_text_error(f"pair '{c.id}' in '{args.pairs}'")
            prompt_text = transcribe_prompt(asr, prompt, f"the prompt of pair '{c.id}'")
        for rep in range(args.repeats):
            name = f"{c.id}_rep{rep}" if args.repeats > 1 else c.id
            jobs.append((c, rep, SynthesisItem(c.custom["target_text"], prompt, prompt_text, name)))
    todo = [j for j in jobs if args.overwrite or not (out_dir / f"{j[2].name}.wav").is_file()]
    if len(todo) < len(jobs):
        logger.info("%d of %d outputs already exist, synthesizing %d", len(jobs) - len(todo), len(jobs), len(todo))
    with tqdm(total=len(todo), desc="synthesize", unit="utt") as bar:
        for i in range(0, len(todo), args.batch_size):
            chunk = todo[i : i + args.batch_size]
            wavs = synth.synthesize([j[2] for j in chunk], gen)
            for (c, rep, item), wav in zip(chunk, wavs):
                save_audio(out_dir / f"{item.name}.wav", wav, synth.sample_rate)
            bar.update(len(chunk))
    import soundfile as sf

    for c, rep, item in jobs:
        path = out_dir / f"{item.name}.wav"
        records.append({
            "id": item.name, "cut_id": c.id, "repeat": rep, "path": str(path.resolve()),
            "duration": round(sf.info(str(path)).duration, 3), "speaker": c.supervisions[0].speaker if c.supervisions else None,
            "target_text": item.text, "prompt_text": item.prompt_text, "prompt_cut_id": c.custom.get("prompt_cut_id"),
        })
    manifest = out_dir / "manifest.jsonl"
    atomic_write_text(manifest, "".join(json.dumps(r) + "\n" for r in records))
    logger.info("wrote %d wavs and %s", len(records), manifest)
    return manifest


def _make_synth(args) -> Synthesizer:
    from dmtts.utils import require_dir

    for flag, path in (("--ar", args.ar), ("--nar", args.nar)):
        require_dir(path, flag, "pass an exported TTS model directory (exp/<run>/export)")
    if not str(args.codec).startswith("preset:"):
        require_dir(args.codec, "--codec", "pass an exported codec directory (dmtts codec export)")
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return Synthesizer(
        args.ar, args.nar, args.codec, device=device, top_k=args.top_k, top_p=args.top_p,
        temperature=args.temperature, max_len_ratio=args.max_len_ratio,
        dtype=getattr(torch, args.dtype),
    )
