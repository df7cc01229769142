"""Evaluation subsets, stored as cut manifests so every system is scored on the same data.

* ``codec_eval_subset``: N random utterances (the paper: 300 of LibriSpeech test-clean, seed 42).
* ``tts_eval_pairs``: zero-shot TTS pairs. Each output cut is the *target* utterance (its text is
  what gets synthesized; its audio is the reference); the prompt is a crop of exactly
  ``prompt_duration`` seconds from a *different* utterance of the same speaker. VALL-E's
  LibriSpeech protocol keeps targets of 4-10 s and crops a random 3 s window; the VCTK protocol
  keeps all targets. The pairing lives in the target cut's custom fields:

  ``prompt_cut_id``      id of the utterance the prompt is cropped from
  ``prompt_start``       crop start in seconds, relative to that cut (and to its recording:
                         preparers produce whole-recording cuts; the offset is added otherwise)
  ``prompt_offset``      crop start in seconds within the prompt's recording
  ``prompt_duration``    crop length in seconds (exactly ``prompt_duration``)
  ``prompt_recording``   the prompt recording as a dict (``Recording.from_dict``), 16 kHz
  ``prompt_speaker``     speaker id (equal to the target's)
  ``prompt_text``        the words inside the crop when word alignments exist, else None
                         (``dmtts synthesize`` then transcribes the crop with its ASR)
  ``prompt_source_text`` the full transcript of the prompt utterance
  ``target_text``        the text to synthesize

Selections are deterministic for a given seed (sorted ids, ``random.Random(seed)``).
"""

from __future__ import annotations

import random
from collections import defaultdict

from lhotse import CutSet, load_manifest
from lhotse.utils import fastcopy

from dmtts.errors import DmttsError
from dmtts.utils import atomic_path, require_file


def load_cuts(path, what: str = "cut manifest", lazy: bool = False) -> CutSet:
    """Load a cut manifest (``lazy``: read as iterated) with an error naming the file (and
    ``what`` it is for) when it is missing or not a CutSet."""
    from lhotse import load_manifest_lazy

    path = require_file(path, what, "pass a *.jsonl.gz CutSet written by 'dmtts prepare'")
    try:
        manifest = load_manifest_lazy(path) if lazy else load_manifest(path)
    except Exception as e:
        raise DmttsError(f"cannot read cut manifest '{path}': {e}") from None
    if not isinstance(manifest, CutSet):
        raise DmttsError(f"'{path}' is a {type(manifest).__name__}, not a CutSet: pass a *_cuts_*.jsonl.gz file")
    return manifest


def save_cuts(cuts: CutSet, path) -> None:
    with atomic_path(path) as tmp:
        cuts.to_file(tmp)


def codec_eval_subset(cuts: CutSet, num: int = 300, seed: int = 42,
                      exclude_speakers: set[str] | None = None) -> CutSet:
    """``num`` utterances drawn uniformly without replacement (all of them if fewer), leaving
    out the speakers in ``exclude_speakers`` (e.g. those seen in training)."""
    exclude_speakers = exclude_speakers or set()
    ordered = sorted((c for c in cuts if not (c.supervisions and c.supervisions[0].speaker in exclude_speakers)),
                     key=lambda c: c.id)
    if num <= 0:
        raise DmttsError("--num must be positive")
    if not ordered:
        raise DmttsError("no utterance left after --exclude-speakers-in: every speaker of --cuts is excluded")
    chosen = random.Random(seed).sample(ordered, min(num, len(ordered)))
    return CutSet.from_cuts(sorted(chosen, key=lambda c: c.id))


def _words_in_window(sup, start: float, end: float) -> str | None:
    """Words of the supervision's word alignment lying fully inside [start, end) (cut time)."""
    if not sup.alignment or "word" not in sup.alignment:
        return None
    words = [w.symbol for w in sup.alignment["word"]
             if w.start + sup.start >= start - 1e-3 and w.start + sup.start + w.duration <= end + 1e-3
             and w.symbol and w.symbol != "<eps>"]
    return " ".join(words) if words else None


def tts_eval_pairs(cuts: CutSet, min_duration: float | None, max_duration: float | None,
                   prompt_duration: float = 3.0, seed: int = 42, prompt_crop: str = "random",
                   exclude_speakers: set[str] | None = None, num: int | None = None) -> CutSet:
    """Pair each target utterance with a ``prompt_duration`` crop of another utterance of its speaker.

    Targets outside [min_duration, max_duration] are dropped; so are targets whose speaker has
    no *other* utterance at least ``prompt_duration`` long. ``exclude_speakers`` drops speakers
    (e.g. those seen in training, for strict zero-shot tests); ``num`` keeps a random subset.

    ``prompt_crop``: where the crop sits in the prompt utterance. ``random`` (VALL-E protocol),
    ``start`` (its first seconds) or ``end`` (its last seconds: on a silence-trimmed corpus the
    prompt then ends on speech, never in a pause the AR could take for the end of an utterance).
    """
    if prompt_crop not in ("random", "start", "end"):
        raise DmttsError(f"prompt crop must be random, start or end, got '{prompt_crop}'")
    by_speaker = defaultdict(list)
    for cut in sorted(cuts, key=lambda c: c.id):
        if not cut.supervisions:
            continue
        by_speaker[cut.supervisions[0].speaker].append(cut)
    rng = random.Random(seed)
    pairs = []
    for speaker in sorted(by_speaker):
        if exclude_speakers and speaker in exclude_speakers:
            continue
        utts = by_speaker[speaker]
        prompt_pool = [c for c in utts if c.duration >= prompt_duration]
        for target in utts:
            if min_duration is not None and target.duration < min_duration:
                continue
            if max_duration is not None and target.duration > max_duration:
                continue
            candidates = [c for c in prompt_pool if c.id != target.id]
            if not candidates:
                continue
            prompt = rng.choice(candidates)
            start = rng.uniform(0.0, prompt.duration - prompt_duration)  # drawn always: same pairs for every crop
            if prompt_crop != "random":
                start = 0.0 if prompt_crop == "start" else prompt.duration - prompt_duration
            start = round(start, 3)
            sup = prompt.supervisions[0]
            custom = dict(target.custom or {})
            custom.update(
                prompt_cut_id=prompt.id,
                prompt_start=start,
                prompt_offset=round(prompt.start + start, 3),
                prompt_duration=prompt_duration,
                prompt_recording=prompt.recording.to_dict(),
                prompt_speaker=speaker,
                prompt_text=_words_in_window(sup, start, start + prompt_duration),
                prompt_source_text=sup.text,
                target_text=target.supervisions[0].text,
            )
            pairs.append(fastcopy(target, custom=custom))
    if not pairs:
        raise DmttsError("no target/prompt pairs could be formed: every speaker needs at least two "
                         f"utterances, one of them at least {prompt_duration} s long, and targets "
                         f"within [{min_duration}, {max_duration}] s")
    if num is not None and num < len(pairs):
        pairs = sorted(random.Random(seed + 1).sample(pairs, num), key=lambda c: c.id)
    return CutSet.from_cuts(pairs)


def load_prompt_audio(pair_cut, sample_rate: int = 16000):
    """The prompt crop of a TTS pair cut as mono float32 audio ``[N]`` at ``sample_rate``.

    The one loader used by synthesis and evaluation. ``prompt_recording`` is a dict in memory;
    lhotse turns it into a ``Recording`` when a manifest is read from disk, so both are accepted.
    ``prompt_offset`` is the crop start in the recording (``prompt_start`` for older pair files).
    """
    from lhotse import Recording

    custom = pair_cut.custom or {}
    missing = [k for k in ("prompt_recording", "prompt_duration") if k not in custom]
    if missing:
        raise DmttsError(f"cut '{pair_cut.id}' lacks {', '.join(missing)}: TTS pairs must come from "
                         "'dmtts subset librispeech-tts-eval|vctk-tts-eval'")
    recording = custom["prompt_recording"]
    if isinstance(recording, dict):
        recording = Recording.from_dict(dict(recording))
    if recording.sampling_rate != sample_rate:
        recording = recording.resample(sample_rate)
    offset = float(custom.get("prompt_offset", custom.get("prompt_start", 0.0)))
    try:
        audio = recording.load_audio(offset=offset, duration=float(custom["prompt_duration"]))
    except Exception as e:
        raise DmttsError(f"cannot load the prompt audio of pair '{pair_cut.id}' "
                         f"(from '{custom.get('prompt_cut_id')}'): {e}") from None
    return audio.mean(axis=0) if audio.ndim == 2 else audio
