"""Signal metrics of one utterance against its reference: STOI, wideband PESQ, ViSQOL, and the
cosine similarity used for speaker embeddings; and one without a reference, the frame-rate comb.
Every function takes 16 kHz float arrays and cuts both to the shorter length."""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np

from dmtts.errors import DmttsError

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
COMB_FRAME_RATE = 50.0  # Hz: the frame rate of every DM-Codec preset (16 kHz, hop 320)
COMB_N_FFT = 4096  # the comb's STFT size (3.9 Hz bins at 16 kHz): its shortest input


def _align(ref: np.ndarray, deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(ref, dtype=np.float64).reshape(-1)
    deg = np.asarray(deg, dtype=np.float64).reshape(-1)
    n = min(len(ref), len(deg))
    if n == 0:
        raise DmttsError("cannot score empty audio")
    return ref[:n], deg[:n]


def stoi_score(ref: np.ndarray, deg: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Classic STOI (pystoi), both signals cut to the shorter length."""
    from pystoi import stoi

    ref, deg = _align(ref, deg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(stoi(ref, deg, sample_rate, extended=False))
    return value if np.isfinite(value) else math.nan


def pesq_wb(ref: np.ndarray, deg: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """Wideband PESQ (ITU-T P.862.2) at 16 kHz; NaN (with a warning) when PESQ finds no speech."""
    from pesq import pesq
    from pesq.cypesq import PesqError

    if sample_rate != 16000:
        raise DmttsError(f"wideband PESQ needs 16 kHz audio, got {sample_rate} Hz")
    ref, deg = _align(ref, deg)
    try:
        return float(pesq(sample_rate, ref.astype(np.float32), deg.astype(np.float32), "wb"))
    except PesqError as e:
        logger.warning("PESQ failed (%s); the score is left empty", type(e).__name__)
        return math.nan


class VisqolSpeech:
    """ViSQOL v3 in speech mode (16 kHz) from visqol-python.

    The MOS mapping is the deep-lattice model of the C++ default when ``ai-edge-litert`` is
    installed (it is in requirements.txt), else ViSQOL's polynomial fallback; ``name`` says which.
    """

    def __init__(self) -> None:
        from visqol import VisqolApi
        from visqol import __version__ as version

        try:
            import ai_edge_litert  # noqa: F401
            lattice = True
        except ImportError:
            lattice = False
        self.api = VisqolApi()
        self.api.create(mode="speech", use_lattice_model=lattice)
        mapper = "lattice mapper" if lattice else "polynomial mapper"
        self.name = f"ViSQOL v3 speech mode, 16 kHz, {mapper} (visqol-python {version})"

    def __call__(self, ref: np.ndarray, deg: np.ndarray) -> float:
        ref, deg = _align(ref, deg)
        try:
            return float(self.api.measure_from_arrays(ref, deg, SAMPLE_RATE).moslqo)
        except Exception as e:  # ViSQOL raises plain ValueErrors for e.g. too-short input
            logger.warning("ViSQOL failed (%s); the score is left empty", e)
            return math.nan


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denom) if denom > 0 else math.nan


def frame_rate_comb_db(wav: np.ndarray, frame_rate: float = COMB_FRAME_RATE, sample_rate: int = SAMPLE_RATE,
                       band: tuple[float, float] = (100.0, 2000.0), n_fft: int = COMB_N_FFT) -> float:
    """How far stationary lines at multiples of ``frame_rate`` stand out of the spectrum, in dB.

    A decoder whose frames repeat from one hop to the next adds a comb of fixed-frequency lines
    at the frame rate's multiples (issue 16's "fixed lines"). The median over time of the STFT
    power (``n_fft`` samples, 3.9 Hz bins at 16 kHz) keeps what is there in most frames and
    discards moving harmonics; the score is the mean over the multiples ``k * frame_rate`` in
    ``band`` of that median's level there minus its level half-way to the next multiple
    (``(k + 0.5) * frame_rate``). Natural speech scores near 0 dB; a comb scores its height.
    """
    x = np.asarray(wav, dtype=np.float64).reshape(-1)
    hop = n_fft // 4
    if len(x) < n_fft:
        raise DmttsError(f"frame_rate_comb_db needs at least {n_fft} samples, got {len(x)}")
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * np.hanning(n_fft)
    power = np.median(np.abs(np.fft.rfft(frames, axis=-1)) ** 2, axis=0) + 1e-20
    bin_hz = sample_rate / n_fft
    multiples = np.arange(math.ceil(band[0] / frame_rate), math.floor(band[1] / frame_rate) + 1) * frame_rate

    def level(freqs: np.ndarray) -> np.ndarray:  # dB at the bins nearest ``freqs``, ±1 bin for the peak
        centre = np.rint(freqs / bin_hz).astype(int)
        return 10 * np.log10(np.max([power[centre + d] for d in (-1, 0, 1)], axis=0))

    return float(np.mean(level(multiples) - level(multiples + frame_rate / 2)))
