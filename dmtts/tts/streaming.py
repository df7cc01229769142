"""Streaming synthesis: audio in chunks while the AR is still generating.

The AR (:meth:`ARModel.generate_steps`) makes level-1 frames one at a time. Whenever it is far
enough ahead of the audio already emitted, the next chunk of ``n`` frames is made:

1. **NAR on a window.** Levels 2..n_q of the frames not yet final are predicted from a window of
   the level-1 frames: ``context_frames`` before them, ``lookahead_frames`` after them, plus the
   whole prompt (all levels) and the whole text, as in whole-utterance synthesis. The window's
   frames keep their positions in the utterance. The NAR attends both ways, so a window's codes
   equal the whole-utterance codes only when the window holds the whole utterance; elsewhere
   they are a close approximation, measured in ``docs/benchmarks.md``.
2. **Codec on a window with overlap.** The codes of the chunk, ``CODEC_CONTEXT_FRAMES`` before it
   (the decoder's convolutions look as far back as ahead) and ``codec_lookahead_frames(codec)``
   after it (6 frames for the waveform head, 19 for the iSTFT and harmonic heads) are decoded
   with the codec's public ``decode``, continuing the previous window's decoder LSTM state
   (``LSTMCarry``) and harmonic phase (``HarmonicPhase``). The chunk's samples are emitted; the
   first ``CODEC_CROSSFADE_FRAMES`` decoded after it are kept and cross-faded (raised cosine)
   into the start of the next chunk, so a boundary joins two decodings of the same frames
   instead of two signal edges. The result equals decoding the whole utterance at once up to
   float rounding.

Chunk sizes start at ``first_chunk_frames`` (the time to first audio) and double up to
``chunk_frames`` (fewer windows, less repeated NAR and codec work). The AR must be
``lookahead_frames + codec_lookahead_frames(codec)`` frames past a chunk's end before the chunk is made;
when it ends, the rest is made at once.

The level-1 codes are those of :meth:`Synthesizer.synthesize` with the same generator (the AR is
the same sampler). Audio already emitted cannot be taken back, so a streamed sentence has one AR
attempt: a failed check (``dmtts.tts.robust``) is logged and recorded, not retried.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from dmtts.codec.periodic import HarmonicPhase
from dmtts.codec.seanet import LSTMCarry
from dmtts.errors import DmttsError
from dmtts.tts.robust import check_generation
from dmtts.tts.synthesize import SynthesisItem, Synthesizer

logger = logging.getLogger(__name__)

# Measured on the v1 demo codec (docs/benchmarks.md): with 4 frames decoded after a chunk its
# last sample is exact, so the streamed audio equals the whole-utterance decoding of the same
# codes (SNR ~100 dB). The margins below keep that for a decoder that looks further ahead; the
# cross-fade covers the frames after a chunk that were decoded with >= 4 frames after them, i.e.
# two exact decodings. The decoder LSTM's state is carried between windows (LSTMCarry): a
# trained LSTM can remember far longer than any affordable context.
CODEC_CONTEXT_FRAMES = 25  # left context of a codec window (the convolutions' backward reach)
CODEC_LOOKAHEAD_FRAMES = 6  # decoded after a chunk: the decoder's convolutions look ahead
CODEC_CROSSFADE_FRAMES = 2  # of them, cross-faded into the start of the next chunk


def codec_lookahead_frames(codec) -> int:
    """Frames decoded after a chunk: ``CODEC_LOOKAHEAD_FRAMES``, or more for a decoder that
    reaches further (``SEANetDecoder.lookahead_frames`` + 1: the frame-rate residual stack of the
    iSTFT and harmonic heads reaches 18 frames ahead)."""
    reach = getattr(getattr(codec, "decoder", None), "lookahead_frames", None)
    return max(CODEC_LOOKAHEAD_FRAMES, reach() + 1) if callable(reach) else CODEC_LOOKAHEAD_FRAMES


@dataclass
class StreamSettings:
    """Chunking of streaming synthesis, in codec frames (50 per second with the 16 kHz codecs)."""

    first_chunk_frames: int = 10
    chunk_frames: int = 50
    lookahead_frames: int = 4
    context_frames: int = 50

    def check(self) -> "StreamSettings":
        """A clear error for settings that cannot stream."""
        for flag, value, low in (("--stream-first-chunk-frames", self.first_chunk_frames, 1),
                                 ("--stream-chunk-frames", self.chunk_frames, 1),
                                 ("--stream-lookahead-frames", self.lookahead_frames, 0),
                                 ("--stream-context-frames", self.context_frames, 0)):
            if not isinstance(value, (int, np.integer)) or value < low:
                raise DmttsError(f"{flag} {value}: must be an integer >= {low} (frames of "
                                 f"{'audio per chunk' if low else 'level-1 codes the NAR sees'})")
        if self.first_chunk_frames > self.chunk_frames:
            raise DmttsError(f"--stream-first-chunk-frames {self.first_chunk_frames} is larger than --stream-chunk-frames "
                             f"{self.chunk_frames}: the first chunk is the smallest (chunks double up to the largest)")
        return self

    def chunk_size(self, index: int) -> int:
        """Frames of chunk ``index`` (0, 1, ...): doubling from the first up to ``chunk_frames``."""
        return min(self.chunk_frames, self.first_chunk_frames << min(index, 30))


@dataclass
class StreamRecord:
    """What a streamed sentence did: per chunk its first frame, frames, the AR's progress when it
    was emitted and when (``at``, seconds from the call); the level-1 and full codes; the AR
    check; time per part."""

    chunks: list[dict] = field(default_factory=list)
    level1: torch.Tensor | None = None
    codes: torch.Tensor | None = None  # [T, n_q], the codes decoded
    check: dict | None = None
    seconds: dict = field(default_factory=lambda: {"ar": 0.0, "nar": 0.0, "codec": 0.0})
    first_chunk_seconds: float | None = None  # from the call to the first chunk
    # where the time to the first chunk went: "prepare" (text, the prompt's codes), "ar_prefill"
    # (the AR's first step: text and prompt through every layer), "ar" (every AR step, prefill
    # included), "nar", "codec"; the bound on time to first audio (docs/benchmarks.md)
    first_chunk_split: dict | None = None


class OverlapDecoder:
    """Chunk-by-chunk codec decoding with left context and a cross-faded overlap (step 2 of the
    module docstring), through the codec's public ``decode``."""

    def __init__(self, codec, context_frames: int | None = None, overlap_frames: int | None = None,
                 crossfade_frames: int = CODEC_CROSSFADE_FRAMES):
        self.codec = codec
        self.overlap = overlap_frames if overlap_frames is not None else codec_lookahead_frames(codec)
        # the left context covers the decoder's backward reach (as far as its forward one); the
        # LSTM's state is carried, not warmed up
        self.context = context_frames if context_frames is not None else max(CODEC_CONTEXT_FRAMES, self.overlap + 6)
        self.hop = codec.hop_length
        self.crossfade = min(crossfade_frames, self.overlap) * self.hop
        self.emitted = 0
        self.tail = np.zeros(0, np.float32)
        self.cycles = None  # the harmonic head's phase at the next chunk's first sample
        self.lead = codec.decoder.carry_lead_frames()
        self.lstm_state = None  # the decoder LSTM's state at the next window's first frame

    def decode(self, codes: torch.Tensor, end: int, final: bool = False) -> np.ndarray:
        """The audio of frames ``[emitted, end)`` given ``codes [>= end + overlap, n_q]`` (the
        final codes so far; when ``final``, every frame: ``end`` must be ``len(codes)``)."""
        start, hop = self.emitted, self.hop
        stop = len(codes) if final else end + self.overlap
        if end <= start or stop > len(codes) or (final and end != len(codes)):
            raise ValueError(f"cannot decode frames [{start}, {end}) from {len(codes)} frames (final={final})")
        lo = max(0, start - self.context)
        lead = min(lo, self.lead)
        # a harmonic decoder continues the previous window's phase, or the cross-fade would mix
        # two phases of the same harmonics (HarmonicPhase); the LSTM continues from the state a
        # whole decode has at this window's start (LSTMCarry), recorded where the next one starts
        phase = HarmonicPhase.anchored((start - lo) * hop, self.cycles, first_frame=lo)
        carry = LSTMCarry(self.lstm_state, lead, None if final else max(0, end - self.context) - lo)
        wav = self.codec.decode(codes[lo - lead:stop].T[None], phase=phase, carry=carry)[0, 0].float().cpu().numpy()
        piece = crossfade(self.tail, wav[(start - lo) * hop: (end - lo) * hop])
        self.tail = wav[(end - lo) * hop: (end - lo) * hop + self.crossfade]
        self.cycles = phase.at((end - lo) * hop) if not final else None
        self.lstm_state = carry.saved
        self.emitted = end
        return piece


def decode_in_chunks(codec, codes: torch.Tensor, settings: "StreamSettings") -> tuple[np.ndarray, list[int]]:
    """``codes [T, n_q]`` decoded chunk by chunk as streaming synthesis does (chunks of
    ``settings.chunk_size``, the last one taking the rest): the audio and the chunk boundaries
    (samples). Compared with ``codec.decode`` of all the codes it shows what streaming costs."""
    decoder, pieces, end, index = OverlapDecoder(codec), [], 0, 0
    while end + settings.chunk_size(index) + decoder.overlap <= len(codes):
        end += settings.chunk_size(index)
        pieces.append(decoder.decode(codes, end))
        index += 1
    pieces.append(decoder.decode(codes, len(codes), final=True))
    return np.concatenate(pieces), [int(b) for b in np.cumsum([len(p) for p in pieces])[:-1]]


def crossfade(tail: np.ndarray, head: np.ndarray) -> np.ndarray:
    """``head`` with its first ``len(tail)`` samples faded in over ``tail`` (raised cosine: the
    weight of ``head`` is 0 at its first sample and rises to 1)."""
    n = min(len(tail), len(head))
    if n == 0:
        return head
    w = 0.5 - 0.5 * np.cos(np.pi * np.arange(n) / n)
    out = head.copy()
    out[:n] = (1 - w) * tail[:n] + w * head[:n]
    return out


@torch.inference_mode()
def stream_sentence(synth: Synthesizer, item: SynthesisItem, settings: StreamSettings | None = None,
                    generator: torch.Generator | None = None, record: StreamRecord | None = None) -> Iterator[np.ndarray]:
    """Yield the float32 audio of one sentence in chunks, each as soon as it is ready (see the
    module docstring); ``record`` (optional) is filled in as it goes."""
    settings = (settings or StreamSettings()).check()
    record = record if record is not None else StreamRecord()
    started = time.perf_counter()
    n_q = synth.n_q
    text, text_lens, prompt, prompt_lens, max_new, min_new, expected = synth.prepare([item])
    prepared = time.perf_counter() - started
    steps = synth.ar.generate_steps(
        text, text_lens, prompt[..., 0], prompt_lens, max_new, min_new, top_k=synth.top_k, top_p=synth.top_p,
        temperature=synth.temperature, generator=generator, ras_window=synth.ras_window,
        ras_threshold=synth.ras_threshold)
    cap = int(max_new[0])
    level1 = torch.zeros(cap, dtype=torch.long, device=synth.device)
    codes = torch.zeros(cap, n_q, dtype=torch.long, device=synth.device)
    decoder = OverlapDecoder(synth.codec)
    state = {"frames": 0, "nar_done": 0, "index": 0, "prefill": None}

    def timed(part: str, fn: Callable):
        t0 = time.perf_counter()
        out = fn()
        record.seconds[part] += time.perf_counter() - t0
        return out

    def chunks(final: bool) -> Iterator[np.ndarray]:
        """Every chunk the frames so far allow (all the rest when ``final``)."""
        avail = state["frames"]
        while decoder.emitted < avail:
            start = decoder.emitted
            end = start + settings.chunk_size(state["index"])
            if final:
                end = avail
            elif avail < end + settings.lookahead_frames + decoder.overlap:
                return
            decode_end = avail if final else end + decoder.overlap
            if decode_end > state["nar_done"]:  # levels 2..n_q of [nar_done, decode_end)
                lo = max(0, state["nar_done"] - settings.context_frames)
                hi = avail if final else min(avail, decode_end + settings.lookahead_frames)
                window = level1[lo:hi][None]
                out = timed("nar", lambda: synth.nar.generate(
                    text, text_lens, prompt, prompt_lens, window, torch.tensor([hi - lo], device=window.device),
                    target_offset=lo)[0])
                codes[state["nar_done"]:decode_end] = out[state["nar_done"] - lo: decode_end - lo]
                state["nar_done"] = decode_end
            piece = timed("codec", lambda: decoder.decode(codes[:decode_end], end, final))
            record.chunks.append({"start": start, "frames": end - start, "ar_frames": avail, "ar_finished": final,
                                  "at": time.perf_counter() - started})
            if record.first_chunk_seconds is None:
                record.first_chunk_seconds = time.perf_counter() - started
                record.first_chunk_split = {"prepare": prepared, "ar_prefill": state["prefill"], **record.seconds}
            state["index"] += 1
            yield piece

    while True:
        t0 = time.perf_counter()
        step = next(steps, None)
        record.seconds["ar"] += time.perf_counter() - t0
        if state["prefill"] is None:
            state["prefill"] = time.perf_counter() - t0
        if step is None:
            break
        _, token, done = step
        if bool(done[0]):
            break
        level1[state["frames"]] = token[0]
        state["frames"] += 1
        yield from chunks(final=False)
    yield from chunks(final=True)
    n = state["frames"]
    record.level1, record.codes = level1[:n].cpu(), codes[:n].cpu()
    record.check = check_generation(record.level1.numpy(), n >= cap, expected[0], synth.checks, synth.frame_rate)
    if record.check["failure"] is not None:
        name = f"'{item.name}'" if item.name else "a streamed sentence"
        logger.warning("synthesis of %s failed (%s: %s); a streamed sentence is not retried (its audio is out)",
                       name, record.check["failure"], record.check["detail"])


def playback_stalls(chunks: list[dict], frame_rate: float) -> float:
    """Seconds a listener waits after the first chunk starts playing: chunk ``k`` (ready at its
    ``at``) plays when it is ready and the one before it has finished; the waits add up. 0 when
    every chunk arrives before the audio before it runs out."""
    stalls, playing_until = 0.0, None
    for c in chunks:
        if playing_until is None:
            playing_until = c["at"]
        elif c["at"] > playing_until:
            stalls += c["at"] - playing_until
            playing_until = c["at"]
        playing_until += c["frames"] / frame_rate
    return stalls


def stream_text(synth: Synthesizer, text: str, prompt_wav: np.ndarray, prompt_text: str,
                settings: StreamSettings | None = None, generator: torch.Generator | None = None,
                pause: float = 0.3, max_words: int = 40, records: list | None = None,
                name: str = "") -> Iterator[np.ndarray]:
    """Long-form streaming: the sentences of ``text`` (``split_sentences``) one after the other,
    each streamed by :func:`stream_sentence`, with ``pause`` seconds of silence between them.
    ``records`` (optional list) gets one ``(sentence, StreamRecord)`` per sentence."""
    from dmtts.text.tts_input_norm import split_sentences

    settings = (settings or StreamSettings()).check()
    sentences = split_sentences(text, max_words=max_words)
    if not sentences:
        raise DmttsError(f"text {text!r} holds no words to speak")
    silence = np.zeros(int(round(pause * synth.sample_rate)), dtype=np.float32)
    for k, sentence in enumerate(sentences):
        if k:
            yield silence
        record = StreamRecord()
        if records is not None:
            records.append((sentence, record))
        item = SynthesisItem(sentence, prompt_wav, prompt_text, f"{name}#{k}" if name else f"sentence {k + 1}")
        yield from stream_sentence(synth, item, settings, generator, record)


def boundary_jumps(wav: np.ndarray, boundaries: list[int], radius: int = 160) -> list[float]:
    """Click measure of chunk boundaries: for each boundary sample index ``b``, the jump
    ``|wav[b] - wav[b-1]|`` divided by the largest sample-to-sample step of the signal's own
    neighbourhood (``radius`` samples on each side, the boundary step excluded). Above 1 is a
    step larger than anything the signal does nearby, i.e. a click."""
    steps = np.abs(np.diff(wav.astype(np.float64)))
    out = []
    for b in boundaries:
        if not 0 < b < len(wav):
            continue
        near = np.concatenate([steps[max(0, b - 1 - radius): b - 1], steps[b: b + radius]])
        out.append(float(steps[b - 1] / max(near.max(initial=0.0), 1e-9)))
    return out


class StdoutWav:
    """16-bit mono WAV written to stdout as it comes: the header's sizes are 0xFFFFFFFF (unknown
    length, the convention of streamed WAV that players such as aplay, ffplay and sox accept)."""

    def __init__(self, sample_rate: int, stream=None):
        import struct
        import sys

        self.stream = stream if stream is not None else sys.stdout.buffer
        self.sample_rate, self.frames = sample_rate, 0
        fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, sample_rate * 2, 2, 16)
        self.stream.write(b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVEfmt " + struct.pack("<I", len(fmt)) + fmt
                          + b"data" + struct.pack("<I", 0xFFFFFFFF))

    def write(self, wav: np.ndarray) -> None:
        wav = np.asarray(wav, dtype=np.float32).reshape(-1)
        if not np.isfinite(wav).all():
            raise DmttsError("refusing to write to stdout: the audio contains NaN or infinite samples")
        # the conversion of soundfile's PCM_16 writer (floor of x * 32768, clipped): stdout and a file agree
        pcm = np.clip(np.floor(np.clip(wav, -1.0, 1.0) * 32768.0), -32768, 32767).astype("<i2")
        self.stream.write(pcm.tobytes())
        self.frames += len(wav)

    def flush(self) -> None:
        self.stream.flush()

    def close(self, ok: bool = True) -> None:
        self.flush()
