"""Zero-shot synthesis: prompt (3 s of audio + its transcript) + text -> speech (VALL-E style).

1. text ids = ``<bos> symbols(prompt text) _ symbols(target text) <eos>`` (``TTSText.join_words``:
   the symbols training sees for the one utterance "prompt text + target text");
2. prompt codes = ``codec.encode(prompt audio)`` (all ``n_q`` levels);
3. AR samples level 1 after the prompt's level 1 (KV cache) until ``<eos>`` or
   ``max_len_ratio`` frames per target-text token;
4. NAR predicts levels 2..n_q greedily, conditioned on the prompt's codes and the text;
5. ``codec.decode`` of the generated frames (the prompt is not included in the output).

Failed AR outputs (``dmtts.tts.robust``) are sampled again with a new seed. ``synthesize_texts``:
long-form text in sentence batches, joined with pauses, streamed to disk. The command line is
``dmtts.tts.synthesize_cli`` (and ``dmtts.tts.synthesize_pairs`` for ``--pairs``); audio in chunks
while the AR is still generating is ``dmtts.tts.streaming``. All in inference mode.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dmtts.errors import DmttsError
from dmtts.tts.robust import DecodeChecks, badness, check_generation, expected_frames

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


@dataclass
class SynthesisResult:
    wav: np.ndarray
    attempts: list[dict]  # one entry per AR attempt: seed, frames, expected frames, failure, detail

    @property
    def failure(self) -> str | None:
        """The failure of the attempt that was kept (None when it passed every check)."""
        kept = [a for a in self.attempts if a.get("kept")]
        return kept[0]["failure"] if kept else None


# How the NAR's levels become audio: ``argmax``, its greedy codes (VALL-E); ``expected``, the codec
# decoder on the expected latent under the NAR's distributions (DMCodec.decode_expected).
NAR_DECODINGS = ("argmax", "expected")


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
        ras: bool = False,
        ras_window: int = 10,
        ras_threshold: float = 0.1,
        max_retries: int = 2,
        checks: DecodeChecks | None = None,
        quantize: str = "none",
        nar_decoding: str = "argmax",
    ):
        from dmtts.tts.export import load_exported
        from dmtts.tts.fast_inference import apply_quantize

        if quantize != "none" and dtype != torch.float32:
            raise DmttsError(f"--quantize {quantize} replaces the float weights of the linear layers: use it with "
                             "--dtype float32 (the default)")
        self.device = torch.device(device)
        self.ar, self.text, ar_cfg = load_exported(ar_dir, "ar", self.device, dtype)
        self.nar, nar_text, _ = load_exported(nar_dir, "nar", self.device, dtype)
        self.ar, self.nar = apply_quantize(self.ar, quantize), apply_quantize(self.nar, quantize)
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
        if nar_decoding not in NAR_DECODINGS:
            raise DmttsError(f"--nar-decoding must be one of {', '.join(NAR_DECODINGS)}, got '{nar_decoding}'")
        self.nar_decoding = nar_decoding
        if max_retries < 0:
            raise DmttsError(f"--max-retries must be >= 0, got {max_retries}")
        if ras and (ras_window < 1 or not 0 <= ras_threshold < 1):
            raise DmttsError(f"repetition-aware sampling needs --ras-window >= 1 and 0 <= --ras-threshold < 1 "
                             f"(got {ras_window}, {ras_threshold})")
        self.n_q = self.nar.cfg.n_q
        self.sample_rate = codec.sample_rate
        self.hop = codec.hop_length
        self.frame_rate = self.sample_rate / self.hop
        self.top_k, self.top_p, self.temperature = top_k, top_p, temperature
        self.ras_window = ras_window if ras else 0
        self.ras_threshold = ras_threshold
        self.max_retries = max_retries
        self.checks = checks or DecodeChecks()
        inf = ar_cfg.get("inference", {})
        self.max_len_ratio = max_len_ratio or inf.get("max_len_ratio", 10.0)
        self.min_len_ratio = inf.get("min_len_ratio", 0.0)
        self.max_seconds = 40.0
        self._prompt_cache: dict[int, tuple[np.ndarray, torch.Tensor]] = {}

    def _symbols(self, text: str, what: str) -> list[str]:
        try:
            return self.text.text_symbols(text)
        except DmttsError as e:
            raise DmttsError(f"{what} {text!r}: {e}") from None

    def _prompt_codes(self, wav: np.ndarray) -> torch.Tensor:
        """Codes ``[P, n_q]`` of a prompt, encoded alone (no padding artefacts) and cached:
        long-form synthesis reuses one prompt for every sentence."""
        hit = self._prompt_cache.get(id(wav))
        if hit is not None and hit[0] is wav:
            return hit[1]
        codes = self.codec.encode(torch.from_numpy(wav)[None, None].to(self.device), n_q=self.n_q)[0].T
        if len(self._prompt_cache) >= 8:
            self._prompt_cache.clear()
        self._prompt_cache[id(wav)] = (wav, codes)
        return codes

    def prepare(self, items: list[SynthesisItem]):
        """The AR/NAR inputs of a batch: ``(text, text_lens, prompt codes [B, P, n_q], prompt_lens,
        max_new, min_new, expected frames)``; the length caps are per item, from its text."""
        dev = self.device
        seqs, n_target, expected = [], [], []
        for it in items:
            where = f" of '{it.name}'" if it.name else ""
            target = self._symbols(it.text, f"target text{where}")
            prompt = self._symbols(it.prompt_text, f"prompt transcript{where}")
            # the same sequence training sees for one utterance: words separated by boundaries
            seqs.append(self.text.join_words(prompt, target))
            n_target.append(len(target))
            prompt_frames = int(np.ceil(len(it.prompt_wav) / self.hop))
            expected.append(expected_frames(prompt_frames, len(prompt), len(target)))
        text, text_lens = self.text.collate(seqs)
        prompt_codes = [self._prompt_codes(it.prompt_wav) for it in items]
        prompt_lens = torch.tensor([len(c) for c in prompt_codes], device=dev)
        codes = torch.zeros(len(items), int(prompt_lens.max()), self.n_q, dtype=torch.long, device=dev)
        for i, c in enumerate(prompt_codes):
            codes[i, : len(c)] = c
        n_target_t = torch.tensor(n_target, device=dev, dtype=torch.float32)
        max_frames = int(self.max_seconds * self.frame_rate)
        max_new = (n_target_t * self.max_len_ratio).ceil().long().clamp(1, max_frames)
        min_new = torch.minimum((n_target_t * self.min_len_ratio).floor().long().clamp(min=1), max_new)
        return text.to(dev), text_lens.to(dev), codes, prompt_lens, max_new, min_new, expected

    @torch.inference_mode()
    def synthesize(self, items: list[SynthesisItem], generator: torch.Generator | None = None) -> list[np.ndarray]:
        """Synthesize a batch; returns one float32 waveform per item."""
        return [r.wav for r in self.synthesize_results(items, generator)]

    @torch.inference_mode()
    def synthesize_results(self, items: list[SynthesisItem], generator: torch.Generator | None = None) -> list[SynthesisResult]:
        """Synthesize a batch with failure detection and retries; one :class:`SynthesisResult` per item.

        Every AR output is checked (:func:`dmtts.tts.robust.check_generation`); the items that
        failed are sampled again, with a new seed per retry (the generator's initial seed + the
        retry number), up to ``max_retries`` times. The first passing attempt is kept, else the
        least bad one. The NAR and the codec then run once on the kept level-1 codes.
        """
        if not items:
            return []
        dev = self.device
        text, text_lens, codes, prompt_lens, max_new, min_new, expected = self.prepare(items)

        base_seed = generator.initial_seed() if generator is not None else torch.initial_seed()
        attempts: list[list[dict]] = [[] for _ in items]
        chosen: list[torch.Tensor | None] = [None] * len(items)
        todo = list(range(len(items)))
        for attempt in range(self.max_retries + 1):
            gen = generator if attempt == 0 else torch.Generator().manual_seed(base_seed + attempt)
            idx = torch.tensor(todo, device=dev)
            level1 = self.ar.generate(
                text[idx], text_lens[idx], codes[idx][..., 0], prompt_lens[idx], max_new[idx], min_new[idx],
                top_k=self.top_k, top_p=self.top_p, temperature=self.temperature, generator=gen,
                ras_window=self.ras_window, ras_threshold=self.ras_threshold,
            )
            still = []
            for i, out in zip(todo, level1):
                info = check_generation(out.cpu().numpy(), len(out) >= int(max_new[i]), expected[i], self.checks,
                                        self.frame_rate)
                # attempt 0 draws from the run's generator (--seed); each retry from a fresh seed
                info.update(attempt=attempt, seed=None if attempt == 0 else int(gen.initial_seed()))
                attempts[i].append({**info, "_codes": out})
                if info["failure"] is None:
                    chosen[i] = out
                else:
                    name = f"'{items[i].name}'" if items[i].name else f"item {i}"
                    more = "retrying with a new seed" if attempt < self.max_retries else "no retries left"
                    logger.warning("synthesis of %s failed (%s: %s); %s", name, info["failure"], info["detail"], more)
                    still.append(i)
            todo = still
            if not todo:
                break
        for i in range(len(items)):
            if chosen[i] is None:  # every attempt failed: keep the least bad one
                chosen[i] = min(attempts[i], key=badness)["_codes"]
            for a in attempts[i]:
                a["kept"] = a.pop("_codes") is chosen[i]

        l1_lens = torch.tensor([len(x) for x in chosen], device=dev)
        l1 = torch.zeros(len(items), int(l1_lens.max()), dtype=torch.long, device=dev)
        for i, x in enumerate(chosen):
            l1[i, : len(x)] = x
        expected = self.nar_decoding == "expected"
        full = self.nar.generate(text, text_lens, codes, prompt_lens, l1, l1_lens, return_probs=expected)
        out = []
        for x, att in zip(full, attempts):  # decode one by one: no padding artefacts, bounded memory
            if expected:  # (codes [T, n_q], probs [T, n_q, V]) -> the decoder on the expected latent
                y = self.codec.decode_expected(x[1].permute(1, 0, 2)[None].to(dev))
            else:
                y = self.codec.decode(x.T[None].to(dev))
            out.append(SynthesisResult(y[0, 0].float().cpu().numpy(), att))
        return out


DEFAULT_PAUSE_SECONDS = 0.3


class _StreamedWav:
    """A wav written piece by piece into a temporary file, renamed onto its path when complete:
    long-form output never has to fit in memory, and a crash leaves no half-written file."""

    def __init__(self, path: Path, sample_rate: int):
        import contextlib

        import soundfile as sf

        from dmtts.utils import atomic_path

        self.path, self.sample_rate, self.frames = Path(path), sample_rate, 0
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_path(self.path))
        self._file = self._stack.enter_context(sf.SoundFile(str(tmp), "w", sample_rate, 1, subtype="PCM_16", format="WAV"))

    def write(self, wav: np.ndarray) -> None:
        wav = np.asarray(wav, dtype=np.float32).reshape(-1)
        if not np.isfinite(wav).all():
            raise DmttsError(f"refusing to write '{self.path}': the audio contains NaN or infinite samples")
        self._file.write(np.clip(wav, -1.0, 1.0))
        self.frames += len(wav)

    def flush(self) -> None:
        """Hand what was written so far to the operating system (streaming: chunk by chunk)."""
        self._file.flush()

    def close(self, ok: bool = True) -> None:
        if ok:
            self._stack.close()
        else:
            self._stack.__exit__(DmttsError, DmttsError("aborted"), None)


def synthesize_texts(synth: Synthesizer, texts: list[str], prompt_wav: np.ndarray, prompt_text: str,
                     out_paths: list[Path], generator: torch.Generator | None = None, batch_size: int = 8,
                     pause: float = DEFAULT_PAUSE_SECONDS, max_words: int = 40, progress: bool = True) -> list[dict]:
    """Long-form synthesis: each text is split into sentences (``split_sentences``), every
    sentence is spoken with the same prompt, in batches of ``batch_size`` sentences, and the
    sentences of a text are joined with ``pause`` seconds of silence into ``out_paths[i]``.

    Audio is streamed to disk sentence by sentence, so memory depends on the batch, not on the
    text's length. Returns one record per text: path, duration, sentences, and each sentence's
    AR attempts (failures and retries).
    """
    from tqdm import tqdm

    from dmtts.text.tts_input_norm import split_sentences

    segments = []  # (text index, sentence index, sentence)
    sentences_of = []
    for t, text in enumerate(texts):
        sentences = split_sentences(text, max_words=max_words)
        if not sentences:
            raise DmttsError(f"text {text!r} holds no words to speak")
        sentences_of.append(sentences)
        segments += [(t, k, sent) for k, sent in enumerate(sentences)]
    silence = np.zeros(int(round(pause * synth.sample_rate)), dtype=np.float32)
    records = [{"path": str(Path(p)), "text": text, "sentences": [], "retries": 0, "failures": 0}
               for p, text in zip(out_paths, texts)]
    writer: _StreamedWav | None = None
    bar = tqdm(total=len(segments), desc="synthesize", unit="sentence", disable=not progress)
    try:
        for start in range(0, len(segments), batch_size):
            batch = segments[start : start + batch_size]
            names = [f"{Path(out_paths[t]).stem}#{k}" for t, k, _ in batch]
            results = synth.synthesize_results(
                [SynthesisItem(sent, prompt_wav, prompt_text, name) for (_, _, sent), name in zip(batch, names)], generator)
            entries = [{"text": sent, "failure": res.failure, "attempts": res.attempts, "wav": res.wav}
                       for (_, _, sent), res in zip(batch, results)]
            _resplit_too_short(synth, entries, names, prompt_wav, prompt_text, generator, silence[: len(silence) // 2])
            for (t, k, sent), entry in zip(batch, entries):
                wav = entry.pop("wav")
                if k == 0:
                    writer = _StreamedWav(out_paths[t], synth.sample_rate)
                else:
                    writer.write(silence)
                writer.write(wav)
                rec = records[t]
                rec["sentences"].append({"seconds": round(len(wav) / synth.sample_rate, 3), **entry})
                rec["retries"] += len(entry["attempts"]) - 1 + sum(len(p["attempts"]) - 1 for p in entry.get("halves", []))
                rec["failures"] += entry["failure"] is not None
                if k == len(sentences_of[t]) - 1:
                    writer.close()
                    rec["duration"] = round(writer.frames / synth.sample_rate, 3)
                    writer = None
            bar.update(len(batch))
    except BaseException:
        if writer is not None:
            writer.close(ok=False)
        raise
    finally:
        bar.close()
    return records


def _resplit_too_short(synth: Synthesizer, entries: list[dict], names: list[str], prompt_wav: np.ndarray,
                       prompt_text: str, generator, clause_pause: np.ndarray) -> None:
    """Last resort for a sentence whose every attempt ended too early: speak its two halves
    (``split_in_two``: at the clause mark nearest the middle) and keep them, joined by a short
    pause, when their length is closer to the expected one. The shorter the text, the less a
    model that stops early loses (splitting a paragraph into sentences is the same remedy)."""
    from dmtts.text.tts_input_norm import split_in_two
    from dmtts.tts.robust import badness

    todo = [(i, split_in_two(e["text"])) for i, e in enumerate(entries) if e["failure"] == "too_short"]
    todo = [(i, halves) for i, halves in todo if len(halves) == 2]
    if not todo:
        return
    items = [SynthesisItem(h, prompt_wav, prompt_text, f"{names[i]}.{j}") for i, halves in todo for j, h in enumerate(halves)]
    results = synth.synthesize_results(items, generator)
    for n, (i, halves) in enumerate(todo):
        entry, first, second = entries[i], results[2 * n], results[2 * n + 1]
        kept = next(a for a in entry["attempts"] if a["kept"])
        expected = kept["expected_frames"]
        frames = sum(next(a for a in r.attempts if a["kept"])["frames"] for r in (first, second))
        split_better = badness({"failure": None, "frames": frames, "expected_frames": expected}) < badness(kept)
        entry["halves"] = [{"text": h, "failure": r.failure, "attempts": r.attempts} for h, r in zip(halves, (first, second))]
        entry["halves_kept"] = split_better
        if split_better:
            entry["wav"] = np.concatenate([first.wav, clause_pause, second.wav])
            entry["failure"] = first.failure or second.failure
            logger.info("'%s' ended too early every time: kept its two halves instead (%d frames for %.0f expected, "
                        "was %d)", names[i], frames, expected, kept["frames"])


def parse_asr_arg(spec: str | None):
    """``--asr BACKEND[:DIR]`` -> an ASR object, or None (for ``none``)."""
    if not spec or spec == "none":
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
