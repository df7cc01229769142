"""Classic speech codecs as baselines of ``dmtts eval codec --baselines``: codec2 and Opus.

Each baseline encodes and decodes an utterance through the Debian command-line tools and returns
audio at the input's sample rate and of exactly the input's length, so it is scored like any other
system:

* ``codec2:<mode>`` (package ``codec2``: ``c2enc`` / ``c2dec``), modes 3200 2400 1600 1400 1300
  1200 700C 450 (bits/s). Codec 2 is a narrowband vocoder: the audio is resampled to 8 kHz and
  written as raw signed 16-bit mono; the decoder's output is resampled back. ``c2enc`` encodes whole
  frames only (160 samples = 20 ms for 3200 and 2400, 320 samples = 40 ms for the others) and the
  decoder's output lags its input by a fixed delay (:data:`CODEC2_DELAY`). So the 8 kHz input of
  ``n8`` samples is zero-padded to ``ceil((n8 + delay) / frame) * frame`` samples (the decoder
  returns exactly that many), the first ``delay`` decoded samples are dropped and the next ``n8``
  kept; resampled back, the result is cut (or zero-padded by at most one sample) to the input length.
* ``opus:<kbps>`` (package ``opus-tools``: ``opusenc --bitrate K`` / ``opusdec``), 6 to 256 kbit/s,
  Opus's default variable bitrate and complexity 10. ``opusenc`` reads a 16-bit WAV at the input's
  rate; ``opusdec --rate`` decodes at that rate when Opus supports it (8, 12, 16, 24 or 48 kHz,
  else at 48 kHz and resampled), as 32-bit float without dither (deterministic). The Ogg stream's
  pre-skip and final granule position make the decoded length equal the input length exactly.

Delay compensation matters: without it codec2 3200's STOI on espeak-ng speech is about 0.67 instead
of 0.88 (STOI compares 25 ms frames in place; PESQ, which aligns the signals itself, hardly changes).
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from dmtts.errors import DmttsError

# bits/s of a codec2 mode -> samples per frame at 8 kHz
CODEC2_FRAME = {"3200": 160, "2400": 160, "1600": 320, "1400": 320, "1300": 320, "1200": 320, "700C": 320,
                "450": 320}
# The decoder's output lags the input by this many 8 kHz samples: the lag that maximises the mean
# STOI of 8 espeak-ng sentences (four voices, two texts) over lags 0-200 ms, measured with codec2
# 1.0.5 (Debian 12). 20 ms for the classic modes; the newamp modes (700C, 450) wait longer.
CODEC2_DELAY = {"3200": 160, "2400": 160, "1600": 160, "1400": 160, "1300": 160, "1200": 160, "700C": 234,
                "450": 224}
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)  # the rates opusdec decodes to directly
OPUS_KBPS = (6.0, 256.0)  # opusenc's range per channel
SPEC_FORMS = (f"codec2:<mode> (mode one of {' '.join(CODEC2_FRAME)}) or opus:<kbps> "
              f"({OPUS_KBPS[0]:g} to {OPUS_KBPS[1]:g}), e.g. codec2:3200 codec2:1300 opus:6 opus:9")
PACKAGES = {"c2enc": "codec2", "c2dec": "codec2", "opusenc": "opus-tools", "opusdec": "opus-tools"}


def require_tool(tool: str) -> str:
    """The path of a command-line tool; a missing one is an error naming its Debian package."""
    path = shutil.which(tool)
    if path is None:
        package = PACKAGES.get(tool, tool)
        raise DmttsError(f"'{tool}' is not on PATH: install it with `apt-get install -y {package}` "
                         f"(Debian package {package}) to use the {package.split('-')[0]} baselines")
    return path


def _tool_identity(path: str) -> str:
    """A tool binary's path, size and modification time: another build is another baseline."""
    st = Path(path).stat()
    return f"{path}:{st.st_size}:{st.st_mtime_ns}"


def _run(cmd: Sequence[str], what: str) -> None:
    try:
        subprocess.run(list(cmd), check=True, capture_output=True)
    except subprocess.CalledProcessError as e:
        err = (e.stderr or b"").decode(errors="replace").strip().splitlines()
        raise DmttsError(f"{what}: `{' '.join(cmd)}` failed ({err[-1] if err else f'exit {e.returncode}'})") from None


def _pcm16(wav: np.ndarray) -> np.ndarray:
    return (np.clip(wav, -1.0, 1.0) * 32767.0).round().astype("<i2")


@dataclass(frozen=True)
class ClassicCodec:
    """One baseline: ``kind`` ``codec2`` (``setting`` a mode) or ``opus`` (``setting`` kbit/s)."""

    kind: str
    setting: str

    @property
    def name(self) -> str:
        """The system name (file-safe: it names ``scores_<name>.csv`` and ``recon/<name>/``)."""
        return f"codec2_{self.setting}" if self.kind == "codec2" else f"opus_{self.setting}kbps"

    @property
    def bitrate_kbps(self) -> float:
        if self.kind == "opus":
            return float(self.setting)
        return int(self.setting.rstrip("C")) / 1000  # the mode is bits/s ("700C": 700)

    @property
    def tools(self) -> tuple[str, str]:
        return ("c2enc", "c2dec") if self.kind == "codec2" else ("opusenc", "opusdec")

    def check_tools(self) -> tuple[str, str]:
        return tuple(require_tool(t) for t in self.tools)  # type: ignore[return-value]

    def identity(self) -> str:
        """What a reconstruction depends on (for the score cache): the codec, its setting, the
        tools' binaries and the delay rule."""
        extra = f"delay{CODEC2_DELAY[self.setting]}" if self.kind == "codec2" else "vbr-float-nodither"
        return "|".join(["classic", self.kind, self.setting, extra, *map(_tool_identity, self.check_tools())])

    def roundtrip(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        """Encode and decode ``wav`` (float mono); the result has ``sample_rate`` and ``len(wav)``."""
        wav = np.asarray(wav, dtype=np.float32).reshape(-1)
        out = self.decoded(wav, sample_rate)[:len(wav)]
        if len(out) < len(wav):  # resampling 8 kHz back to an odd rate may end a sample short
            out = np.pad(out, (0, len(wav) - len(out)))
        return np.clip(out, -1.0, 1.0).astype(np.float32)

    def decoded(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        """The decoder's output at ``sample_rate`` (its delay removed) before it is cut to the
        input's length: see the module docstring for its exact length."""
        wav = np.asarray(wav, dtype=np.float32).reshape(-1)
        if wav.size == 0:
            raise DmttsError(f"{self.name}: cannot encode empty audio")
        with tempfile.TemporaryDirectory(prefix="dmtts_baseline_") as tmp:
            if self.kind == "codec2":
                return self._codec2(wav, sample_rate, Path(tmp))
            return self._opus(wav, sample_rate, Path(tmp))

    def _codec2(self, wav: np.ndarray, sample_rate: int, tmp: Path) -> np.ndarray:
        from dmtts.audio import resample

        enc, dec = self.check_tools()
        x8 = resample(wav, sample_rate, 8000) if sample_rate != 8000 else wav
        frame, delay = CODEC2_FRAME[self.setting], CODEC2_DELAY[self.setting]
        padded = math.ceil((len(x8) + delay) / frame) * frame
        _pcm16(np.pad(x8, (0, padded - len(x8)))).tofile(tmp / "in.raw")
        _run([enc, self.setting, str(tmp / "in.raw"), str(tmp / "coded.bit")], f"{self.name} encoder")
        _run([dec, self.setting, str(tmp / "coded.bit"), str(tmp / "out.raw")], f"{self.name} decoder")
        y8 = np.fromfile(tmp / "out.raw", dtype="<i2").astype(np.float32) / 32768.0
        if len(y8) != padded:  # the framing rule above no longer holds: say so rather than misalign
            raise DmttsError(f"{self.name}: c2dec returned {len(y8)} samples for {padded} input samples "
                             f"({frame}-sample frames); this codec2 build frames differently")
        y8 = y8[delay:delay + len(x8)]
        return resample(y8, 8000, sample_rate) if sample_rate != 8000 else y8

    def _opus(self, wav: np.ndarray, sample_rate: int, tmp: Path) -> np.ndarray:
        import soundfile as sf

        from dmtts.audio import resample

        enc, dec = self.check_tools()
        sf.write(tmp / "in.wav", _pcm16(wav), sample_rate, subtype="PCM_16")
        rate = sample_rate if sample_rate in OPUS_RATES else 48000
        _run([enc, "--quiet", "--bitrate", self.setting, str(tmp / "in.wav"), str(tmp / "coded.opus")],
             f"{self.name} encoder")
        _run([dec, "--quiet", "--rate", str(rate), "--float", "--no-dither", str(tmp / "coded.opus"),
              str(tmp / "out.wav")], f"{self.name} decoder")
        y, sr = sf.read(tmp / "out.wav", dtype="float32", always_2d=True)
        y = y.mean(axis=1)
        return resample(y, sr, sample_rate) if sr != sample_rate else y


def parse_baseline(spec: str) -> ClassicCodec:
    """``codec2:<mode>`` or ``opus:<kbps>`` as a :class:`ClassicCodec`; anything else is an error
    that lists the accepted forms."""
    kind, sep, setting = spec.strip().partition(":")
    kind = kind.lower()
    if sep and kind == "codec2":
        mode = setting.upper()
        if mode in CODEC2_FRAME:
            return ClassicCodec("codec2", mode)
    elif sep and kind == "opus" and re.fullmatch(r"\d+(\.\d+)?", setting):
        kbps = float(setting)
        if OPUS_KBPS[0] <= kbps <= OPUS_KBPS[1]:
            return ClassicCodec("opus", f"{kbps:g}")
    raise DmttsError(f"--baselines '{spec}': not a baseline; use {SPEC_FORMS}")


def parse_baselines(specs: Sequence[str] | None) -> list[ClassicCodec]:
    """Parse every spec and check the tools are installed (before any work); a repeat is an error."""
    out: list[ClassicCodec] = []
    for spec in specs or []:
        codec = parse_baseline(spec)
        if codec in out:
            raise DmttsError(f"--baselines: '{spec}' is given twice")
        codec.check_tools()
        out.append(codec)
    return out
