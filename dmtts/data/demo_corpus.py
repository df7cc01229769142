"""A transcribed multi-speaker demo corpus made offline with Debian's speech synthesizers.

Each *voice* is one speaker: a flite voice built from real recordings (some with their pitch or
speaking rate changed), a festival voice (two diphone voices and the HTS voice of CMU Arctic's
SLT speaker), or an espeak-ng voice/variant with its own pitch and rate. The last speaker id is
always the held-out zero-shot speaker (festival's SLT HTS voice: natural enough that Whisper
tiny.en transcribes it well, so WER measures the models rather than the ASR). Sentences come from a seeded generator over templates with
names, places, numbers, dates, money and varied punctuation, so the front-end and the ASR-based
metrics meet the same kinds of text as in real corpora. The output uses the LibriSpeech layout::

    DIR/SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac
    DIR/SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt      ("UTT_ID text" per line)

at 16 kHz, plus ``DIR/SPEAKERS.txt`` naming the voice behind every speaker id and
``DIR/SPEAKER_GROUPS.txt`` (``speaker family`` per line) for per-family evaluation tables.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dmtts.audio import SAMPLE_RATE, load_audio, save_audio
from dmtts.data.demo_sentences import spoken_sentences
from dmtts.errors import DmttsError
from dmtts.utils import atomic_write_text

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoVoice:
    """One synthetic speaker: an engine, its voice name, and espeak-ng's pitch/rate."""

    engine: str  # "flite", "festival" or "espeak-ng"
    voice: str
    pitch: int = 50  # espeak-ng -p (0-99)
    rate: int = 165  # espeak-ng -s (words per minute)
    f0: int = 0  # flite: int_f0_target_mean in Hz (0: the voice's own)
    stretch: float = 1.0  # flite duration_stretch / festival Duration_Stretch (>1: slower)

    @property
    def family(self) -> str:
        """The synthesizer family, for per-family tables: flite, festival-diphone, festival-hts, espeak-ng."""
        if self.engine == "festival":
            return "festival-hts" if "hts" in self.voice else "festival-diphone"
        return self.engine

    @property
    def label(self) -> str:
        if self.engine == "espeak-ng":
            return f"espeak-ng:{self.voice}:p{self.pitch}:s{self.rate}"
        label = f"{self.engine}:{self.voice}"
        if self.f0:
            label += f":f0={self.f0}"
        if self.stretch != 1.0:
            label += f":stretch={self.stretch:g}"
        return label


# Training voices, most natural first. Checked to give distinct audio: espeak-ng ignores variants
# on some voices (e.g. en-gb+m2), flite's rms and awb ignore int_f0_target_mean (so they vary by
# rate only), flite's slt and kal16 honour it.
VOICES: tuple[DemoVoice, ...] = (
    DemoVoice("flite", "slt"),
    DemoVoice("flite", "rms"),
    DemoVoice("flite", "awb"),
    DemoVoice("flite", "kal16"),
    DemoVoice("festival", "kal_diphone"),
    DemoVoice("festival", "ked_diphone"),
    DemoVoice("flite", "slt", f0=220, stretch=0.9),
    DemoVoice("flite", "kal16", f0=140, stretch=1.1),
    DemoVoice("flite", "rms", stretch=1.2),
    DemoVoice("flite", "awb", stretch=0.85),
    DemoVoice("flite", "slt", f0=150, stretch=1.15),
    DemoVoice("flite", "kal16", f0=85, stretch=0.95),
    DemoVoice("festival", "ked_diphone", stretch=1.15),
    DemoVoice("espeak-ng", "en-us+f2", pitch=60, rate=160),
    DemoVoice("espeak-ng", "en-gb-x-rp+m3", pitch=40, rate=155),
    DemoVoice("espeak-ng", "en-029+f3", pitch=70, rate=150),
    DemoVoice("espeak-ng", "en-us+m1", pitch=35, rate=170),
    DemoVoice("espeak-ng", "en-gb-scotland+m2", pitch=45, rate=160),
    DemoVoice("espeak-ng", "en+f4", pitch=65, rate=165),
    DemoVoice("espeak-ng", "en-us-nyc+m4", pitch=30, rate=150),
    DemoVoice("espeak-ng", "en-gb-x-rp+f2", pitch=75, rate=160),
    DemoVoice("espeak-ng", "en-us+m6", pitch=50, rate=175),
    DemoVoice("espeak-ng", "en-029+m5", pitch=40, rate=145),
    DemoVoice("espeak-ng", "en+annie", pitch=70, rate=160),
)

# The zero-shot speaker, never trained on: always the last speaker id of the corpus.
HELD_OUT_VOICE = DemoVoice("festival", "cmu_us_slt_arctic_hts")
MAX_SPEAKERS = len(VOICES) + 1

def check_synthesizers(voices: list[DemoVoice]) -> None:
    """Fail with the apt command to run when a needed synthesizer is not installed."""
    missing = sorted({v.engine for v in voices if shutil.which(_PROGRAMS[v.engine]) is None})
    if missing:
        packages = " ".join(p for e in missing for p in _PACKAGES[e])
        raise DmttsError(
            f"speech synthesizer(s) {', '.join(missing)} not found on PATH: install them with "
            f"'apt-get install -y {packages}' (or run 'make demo' as root)"
        )
    for v in voices:
        if v.engine == "festival" and not any(Path(d).is_dir() for d in _festival_voice_dirs(v.voice)):
            raise DmttsError(f"festival voice '{v.voice}' is not installed: "
                             f"'apt-get install -y {' '.join(_PACKAGES['festival'])}'")


_PROGRAMS = {"flite": "flite", "espeak-ng": "espeak-ng", "festival": "text2wave"}
_PACKAGES = {"flite": ["flite"], "espeak-ng": ["espeak-ng"],
             "festival": ["festival", "festvox-kallpc16k", "festvox-kdlpc16k", "festvox-us-slt-hts"]}


def _festival_voice_dirs(voice: str) -> list[str]:
    return [f"/usr/share/festival/voices/{lang}/{voice}" for lang in ("english", "us")]


def synthesize(voice: DemoVoice, text: str) -> np.ndarray:
    """Synthesize ``text`` with ``voice``; returns 16 kHz float32 audio."""
    with tempfile.TemporaryDirectory() as tmp:
        wav_path = Path(tmp) / "out.wav"
        stdin = None
        if voice.engine == "flite":
            cmd = ["flite", "-voice", voice.voice, "--setf", f"duration_stretch={voice.stretch}"]
            if voice.f0:
                cmd += ["--setf", f"int_f0_target_mean={voice.f0}"]
            cmd += ["-t", text, "-o", str(wav_path)]
        elif voice.engine == "festival":
            cmd = ["text2wave", "-eval", f"(voice_{voice.voice})", "-eval",
                   f"(Parameter.set 'Duration_Stretch {voice.stretch})", "-o", str(wav_path)]
            stdin = text
        else:
            cmd = ["espeak-ng", "-v", voice.voice, "-p", str(voice.pitch), "-s", str(voice.rate),
                   "-w", str(wav_path), "--", text]
        result = subprocess.run(cmd, capture_output=True, text=True, input=stdin)
        if result.returncode != 0 or not wav_path.is_file():
            raise DmttsError(f"{voice.engine} failed for voice '{voice.voice}': {result.stderr.strip()}")
        wav, _ = load_audio(wav_path, SAMPLE_RATE)
    return wav


def demo_voices(num_speakers: int) -> list[DemoVoice]:
    """The voices of a ``num_speakers`` corpus: the first ``num_speakers - 1`` training voices,
    then the held-out zero-shot voice (the last speaker id)."""
    if not 2 <= num_speakers <= MAX_SPEAKERS:
        raise DmttsError(f"--num-speakers must be between 2 and {MAX_SPEAKERS} (one per distinct voice; "
                         "the last one is the held-out zero-shot speaker)")
    return list(VOICES[:num_speakers - 1]) + [HELD_OUT_VOICE]


def make_demo_corpus(output_dir: str | Path, num_speakers: int = 8, utts_per_speaker: int = 40,
                     seed: int = 42, num_jobs: int = 2) -> Path:
    """Write the demo corpus into ``output_dir`` (LibriSpeech layout) and return the path.

    Speaker ids are ``1001, 1002, ...`` (chapter ``1``); the last one is the held-out voice
    (:data:`HELD_OUT_VOICE`). Every utterance reads its own sentence: no text occurs twice.
    Already complete speakers are kept (the command is resumable); a speaker directory is
    written under a temporary name and renamed when done. ``num_jobs`` synthesizer processes
    run at once.
    """
    if utts_per_speaker < 1:
        raise DmttsError("--utts-per-speaker must be at least 1")
    voices = demo_voices(num_speakers)
    sentences = spoken_sentences(len(voices) * utts_per_speaker, seed)
    texts = [sentences[i * utts_per_speaker:(i + 1) * utts_per_speaker] for i in range(len(voices))]
    _write_speakers(Path(output_dir), voices, texts, num_jobs)
    logger.info("demo corpus with %d speakers x %d utterances in %s", num_speakers, utts_per_speaker, output_dir)
    return output_dir


# Voices and sentences for a check the recipe's corpus never prepares for: hand-written sentences
# outside the generator's grammar, read by the held-out voice (new text only) and by espeak-ng
# variants that no training voice uses (f5, m7, m8, and klatt2, espeak's Klatt formant synthesis
# instead of its default one), with pitches and rates of their own.
UNSEEN_VOICES: tuple[DemoVoice, ...] = (
    HELD_OUT_VOICE,
    DemoVoice("espeak-ng", "en-us+f5", pitch=55, rate=165),
    DemoVoice("espeak-ng", "en+m7", pitch=45, rate=160),
    DemoVoice("espeak-ng", "en-gb-x-rp+m8", pitch=35, rate=150),
    DemoVoice("espeak-ng", "en-us+klatt2", pitch=60, rate=155),
)


def make_unseen_corpus(output_dir: str | Path, num_jobs: int = 2) -> Path:
    """Every voice of :data:`UNSEEN_VOICES` reads every sentence of
    :data:`dmtts.data.demo_sentences.UNSEEN_SENTENCES` (LibriSpeech layout, speaker ids from 2001)."""
    from dmtts.data.demo_sentences import UNSEEN_SENTENCES

    voices = list(UNSEEN_VOICES)
    _write_speakers(Path(output_dir), voices, [list(UNSEEN_SENTENCES)] * len(voices), num_jobs, first_id=2001,
                    group_suffix="-heldout")
    return Path(output_dir)


def _write_speakers(output_dir: Path, voices: list[DemoVoice], texts: list[list[str]], num_jobs: int,
                    first_id: int = 1001, group_suffix: str = "") -> None:
    """Speaker ``first_id + i`` = ``voices[i]`` reading ``texts[i]``. Finished speakers are kept
    (resumable); a speaker is written under a temporary name and renamed when complete.
    ``SPEAKER_GROUPS.txt`` names each speaker's family plus ``group_suffix``."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    check_synthesizers(voices)
    output_dir.mkdir(parents=True, exist_ok=True)
    speaker_lines = []
    chapter = "1"
    with ThreadPoolExecutor(max_workers=max(1, num_jobs)) as executor:
        for index, (voice, speaker_texts) in enumerate(tqdm(list(zip(voices, texts)), desc="demo speakers")):
            speaker = str(first_id + index)
            speaker_lines.append(f"{speaker} | {voice.label}")
            final_dir = output_dir / speaker
            if (final_dir / chapter / f"{speaker}-{chapter}.trans.txt").is_file():
                continue
            tmp_dir = output_dir / f".{speaker}.tmp"
            shutil.rmtree(tmp_dir, ignore_errors=True)
            (tmp_dir / chapter).mkdir(parents=True)
            utt_ids = [f"{speaker}-{chapter}-{utt:04d}" for utt in range(len(speaker_texts))]
            # subprocess-bound: threads run the synthesizers in parallel
            audios = executor.map(lambda text, v=voice: synthesize(v, text), speaker_texts)
            for utt_id, audio in zip(utt_ids, audios):
                save_audio(tmp_dir / chapter / f"{utt_id}.flac", audio)
            lines = [f"{utt_id} {text}" for utt_id, text in zip(utt_ids, speaker_texts)]
            (tmp_dir / chapter / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
            shutil.rmtree(final_dir, ignore_errors=True)
            tmp_dir.rename(final_dir)
    atomic_write_text(output_dir / "SPEAKERS.txt", "; SPEAKER | VOICE\n" + "\n".join(speaker_lines) + "\n")
    # speaker -> voice family, the --speaker-groups file of `dmtts eval codec`
    atomic_write_text(output_dir / "SPEAKER_GROUPS.txt",
                      "".join(f"{first_id + i} {v.family}{group_suffix}\n" for i, v in enumerate(voices)))
