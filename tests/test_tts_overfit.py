"""Overfit test: training and zero-shot synthesis build the same sequences.

A toy corpus of one speaker whose level-1 codes are a fixed function of the phoneme sequence:
a leading pause (the code of the word boundary ``_``), then the code of every phoneme, each
for ``K = FRAMES_PER_SYMBOL`` frames. In the AR's training sequence
``[<bos> s_1 .. s_n <eos> ; <bos> q_0 .. q_{K(n+1)-1}]`` the audio slot at position ``j``
predicts the code of the text symbol at position ``j // K`` (``<eos>`` when that is the text's
``<eos>``): the task can only be solved by reading the text in order, position by position.

The same rule gives the zero-shot answer. Prompted with utterance A's codes and transcript and
asked for utterance B's text, the AR sees ``<bos> A _ B <eos>``, which is how training
phonemizes the utterance "A B": after A's ``K (n_A + 1)`` prompt frames the next slots read the
``_`` between A and B (the pause, which is also B's first frames), then B's phonemes, then
``<eos>``. So the continuation must be exactly B's training codes. A difference between the
sequences of training and synthesis (no word boundary between prompt and target text, an extra
or missing ``<bos>``, audio positions shifted, a prompt a frame short) moves the text against
the audio and breaks the match: ``test_a_train_synthesis_mismatch_breaks_the_match`` checks
that each such breakage does.

A tiny AR and NAR are trained through ``dmtts.tts.train.train`` (YAML config, as
``test_tts_train`` does) and run through ``dmtts.tts.synthesize.Synthesizer`` (the path of
``dmtts synthesize``: text built by ``TTSText.join_words`` + ``collate``, ``ARModel.generate``,
the robustness checks, the NAR), with a stand-in codec whose "audio" is the codes themselves
(the real codec would not give back the toy codes). About 40 s on one CPU thread.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dmtts.text.phonemizer import WORD_BOUNDARY
from tts_fixtures import write_config

# One speaker. The real sentences are the prompts and targets of the zero-shot pairs; the
# other utterances are random "words" of the same phonemes (as the phonemizer writes them:
# words joined by '_', punctuation as symbols). With the sentences alone (or with 48 more of
# random English words) the tiny AR memorizes every utterance instead of learning to read:
# measured training accuracy 1.0 but zero-shot match 0.02-0.14 (0.1-0.6 on unseen texts).
# Random phoneme strings leave no shortcut: it learns to read, and reads unseen texts too.
SENTENCES = [
    "Hello world.",
    "The cat sat on the mat.",
    "Bring me the blue book, please.",
    "She sells sea shells by the sea shore.",
    "We will meet again at noon tomorrow.",
    "A quick brown fox jumps over the lazy dog.",
]
N_RANDOM = 320  # with 160 (and 500 steps) one pair gave 0.97
RANDOM_LENGTHS = (8, 72)  # symbols; the longest zero-shot sequence (prompt + '_' + target) has 56


def random_utterance(rng, phones: list[str], marks: list[str]) -> list[str]:
    """Random phoneme "words" joined by word boundaries, some followed by punctuation."""
    n = int(rng.integers(*RANDOM_LENGTHS))
    out: list[str] = []
    while len(out) < n:
        if out:
            if rng.random() < 0.15:
                out.append(str(rng.choice(marks)))
            out.append(WORD_BOUNDARY)
        out += [str(x) for x in rng.choice(phones, int(rng.integers(1, 7)))]
    return out + [str(rng.choice(marks))]


# (prompt utterance, target utterance): zero-shot pairs, synthesized in one batch (prompts and
# texts of different lengths: padding is exercised too)
PAIRS = [(0, 3), (1, 2), (2, 4), (0, 5), (4, 1)]
CODEBOOK = 64
N_Q = 8
SPEAKER_OFFSET = 5  # the speaker's code offset
# One frame per symbol: the audio slot reads the text symbol at its own position, which the tiny
# AR learns in a few hundred steps, and any shift by one position (a symbol or a frame) breaks
# the match completely. Measured with 2 frames per symbol (the code repeated): 1200 steps pass
# with seeds 1 and 3 but one pair gives 0.76 with seed 2, and a one-frame shift still matches
# about half the frames (0.5); with two distinct codes per symbol 0.96-1.0, one-frame shifts
# 0.3-0.7 (the AR re-syncs on the symbol boundaries).
FRAMES_PER_SYMBOL = 1
# Measured (level-1 frames equal to B's training codes, per pair): 1.000 for all 5 pairs with
# training seeds 1, 2 and 3; every breakage below gives at most 0.05 on any pair.
MIN_MATCH = 0.9


# -- the toy corpus -------------------------------------------------------------------------
def level1_codes(symbols: list[str], table) -> np.ndarray:
    """A leading pause (the word-boundary code), then every symbol's code, each for
    ``FRAMES_PER_SYMBOL`` frames."""
    ids = np.array([table.id(s) for s in [WORD_BOUNDARY] + list(symbols)], dtype=np.int64)
    return np.repeat(SPEAKER_OFFSET + ids, FRAMES_PER_SYMBOL)


def all_levels(level1: np.ndarray) -> np.ndarray:
    """``[T, n_q]``: level k (2..n_q) a fixed function of level 1 (what the NAR learns)."""
    return np.stack([(level1 * (k + 1) + 3 * k) % CODEBOOK for k in range(N_Q)], axis=1)


def make_overfit_data(tmp: Path) -> dict:
    """Phonemized cuts (``supervision.custom["phonemes"]``, as ``dmtts phonemize`` writes them)
    with stored codes (``dmtts.data.codes``), and the symbol table."""
    import soundfile as sf
    from lhotse import CutSet, MonoCut, Recording, SupervisionSegment
    from lhotse.features.io import NumpyHdf5Writer

    from dmtts.data.codes import attach_codes
    from dmtts.text.frontend import PHONEMES_KEY
    from dmtts.text.phonemizer import Phonemizer
    from dmtts.text.symbols import SymbolTable

    tmp.mkdir(parents=True, exist_ok=True)
    phonemes = Phonemizer("en-us").phonemize_batch(SENTENCES)
    marks = sorted({s for ph in phonemes for s in ph if s in ",.!?"})
    phones = sorted({s for ph in phonemes for s in ph} - set(marks) - {WORD_BOUNDARY})
    rng = np.random.default_rng(0)
    phonemes += [random_utterance(rng, phones, marks) for _ in range(N_RANDOM)]
    texts = SENTENCES + [" ".join(ph) for ph in phonemes[len(SENTENCES):]]
    table = SymbolTable.from_sequences(phonemes)
    assert SPEAKER_OFFSET + len(table) <= CODEBOOK
    table.to_file(tmp / "symbols.txt")
    wav_path = tmp / "silence.wav"
    longest = FRAMES_PER_SYMBOL * (max(len(ph) for ph in phonemes) + 1) * 0.02
    sf.write(wav_path, np.zeros(int(16000 * (longest + 1)), dtype=np.float32), 16000)
    rec = Recording.from_file(wav_path)
    cuts, codes = [], []
    with NumpyHdf5Writer(tmp / "codes.h5") as writer:
        for i, (text, ph) in enumerate(zip(texts, phonemes)):
            c = all_levels(level1_codes(ph, table))
            dur = len(c) * 0.02
            cut = MonoCut(
                id=f"utt{i}", start=0.0, duration=dur, channel=0, recording=rec,
                supervisions=[SupervisionSegment(id=f"utt{i}", recording_id=rec.id, start=0.0, duration=dur,
                                                 text=text, speaker="spk0", custom={PHONEMES_KEY: ph})],
            )
            cuts.append(attach_codes(cut, writer, c))
            codes.append(c)
    CutSet.from_cuts(cuts).to_file(tmp / "cuts.jsonl.gz")
    return {"cuts": tmp / "cuts.jsonl.gz", "symbols": tmp / "symbols.txt", "codes": codes, "phonemes": phonemes}


class CodesCodec(torch.nn.Module):
    """Stand-in codec whose waveform is the codes themselves (``hop_length = n_q`` samples per
    frame, 50 frames/s): ``encode`` of an utterance's "audio" gives back its training codes and
    the synthesized "audio" is the generated codes, all levels."""

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(codebook_size=CODEBOOK, n_q=N_Q)
        self.hop_length = N_Q
        self.sample_rate = 50 * N_Q

    @staticmethod
    def wav_of(codes: np.ndarray) -> np.ndarray:
        return np.asarray(codes, dtype=np.float32).reshape(-1)

    def encode(self, wav: torch.Tensor, n_q: int | None = None) -> torch.Tensor:  # [B, 1, N] -> [B, n_q, T]
        codes = wav.round().long().reshape(wav.shape[0], -1, N_Q).transpose(1, 2)
        return codes[:, : n_q or N_Q]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:  # [B, n_q, T] -> [B, 1, T * n_q]
        return codes.transpose(1, 2).reshape(codes.shape[0], 1, -1).float()


def match(generated: np.ndarray, reference: np.ndarray) -> float:
    """Fraction of frames equal (frame by frame), over the longer of the two."""
    n = min(len(generated), len(reference))
    return float((generated[:n] == reference[:n]).sum()) / max(len(generated), len(reference), 1)


# -- training -------------------------------------------------------------------------------
AR_STEPS = 800
NAR_STEPS = 100


def _config(path: Path, data: dict, steps: int) -> Path:
    return write_config(path, data, **{
        "model.codebook_size": CODEBOOK, "model.n_q": N_Q, "model.d_model": 64, "model.ffn_dim": 128,
        "model.n_heads": 2, "model.n_layers": 2, "model.dropout": 0.0,
        "data.max_duration": 20.0, "data.num_buckets": 2, "data.min_duration": 0.01,
        "optim.warmup_batches": 10, "optim.lr_batches": 10000,
        "training.max_steps": steps, "training.num_epochs": 100000, "training.log_interval": 50,
        "training.num_threads": 1, "training.max_len_ratio": 3.0, "training.seed": 1,
    })


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from dmtts.tts.train import train

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("overfit")
    data = make_overfit_data(tmp / "data")
    t0 = time.time()
    ar = train("ar", str(_config(tmp / "ar.yaml", data, AR_STEPS)), str(tmp / "ar"), progress=False)
    t1 = time.time()
    nar = train("nar", str(_config(tmp / "nar.yaml", data, NAR_STEPS)), str(tmp / "nar"), progress=False)
    print(f"\nAR training {t1 - t0:.1f} s, NAR training {time.time() - t1:.1f} s")
    return {**data, "ar": ar, "nar": nar}


def synthesize_pairs(trained) -> list:
    """Greedy zero-shot synthesis of every pair in one batch: prompt = utterance A's codes (its
    "audio") and transcript, text = utterance B's. Returns ``(codes [T, n_q], failure)`` per pair."""
    from dmtts.tts.synthesize import SynthesisItem, Synthesizer

    synth = Synthesizer(trained["ar"], trained["nar"], CodesCodec(), top_k=1, max_retries=0)
    items = [SynthesisItem(SENTENCES[b], CodesCodec.wav_of(trained["codes"][a]), SENTENCES[a], f"{a}->{b}")
             for a, b in PAIRS]
    results = synth.synthesize_results(items, generator=torch.Generator().manual_seed(0))
    return [(r.wav.round().astype(np.int64).reshape(-1, N_Q), r.failure) for r in results]


def level1_matches(trained, outputs) -> list[float]:
    return [match(out[:, 0], trained["codes"][b][:, 0]) for (_, b), (out, _) in zip(PAIRS, outputs)]


# -- tests ----------------------------------------------------------------------------------
def test_zero_shot_continuation_is_the_training_codes(trained):
    outputs = synthesize_pairs(trained)
    matches = level1_matches(trained, outputs)
    print("level-1 match per pair:", " ".join(f"{m:.3f}" for m in matches))
    for (a, b), (out, failure), m in zip(PAIRS, outputs, matches):
        ref = trained["codes"][b]
        assert abs(len(out) - len(ref)) <= 2, f"pair {a}->{b}: {len(out)} frames, training has {len(ref)}"
        assert m >= MIN_MATCH, f"pair {a}->{b}: level-1 match {m:.3f} < {MIN_MATCH}"
        assert failure is None, f"pair {a}->{b}: the synthesis checks flag '{failure}'"
        # the NAR's levels 2..n_q follow the generated level 1 as in training
        assert np.mean(all_levels(out[:, 0]) == out) >= MIN_MATCH, f"pair {a}->{b}: NAR levels"


def _no_word_boundary(mp):
    from dmtts.tts.frontend import TTSText

    mp.setattr(TTSText, "join_words", lambda self, first, second: first + second)


def _collate_without(what):
    def patch(mp):
        from dmtts.tts.frontend import TTSText

        mp.setattr(TTSText, "collate", lambda self, seqs: self.frontend.collater(
            add_bos=what != "bos", add_eos=what != "eos")(seqs))
    return patch


def _bos_eos_between(mp):
    """Prompt transcript and target text each collated with their own <bos> ... <eos>."""
    from dmtts.text.symbols import BOS, EOS
    from dmtts.tts.frontend import TTSText

    real = TTSText.join_words
    mp.setattr(TTSText, "join_words", lambda self, first, second: real(self, first + [EOS], [BOS] + second))


def _audio_positions_from_one(mp):
    from dmtts.tts.model import ARModel

    real = ARModel.embed_audio
    mp.setattr(ARModel, "embed_audio", lambda self, tokens, positions: real(self, tokens, positions + 1))


def _generated_positions_off_by_one(mp):
    """The generated frames' audio positions one ahead of the prompt's (decoding steps only)."""
    from dmtts.tts.model import ARModel

    real = ARModel.embed_audio
    mp.setattr(ARModel, "embed_audio", lambda self, tokens, positions: real(
        self, tokens, positions + 1 if tokens.shape[1] == 1 else positions))


def _prompt_first_frame_lost(mp):
    from dmtts.tts.synthesize import Synthesizer

    real = Synthesizer._prompt_codes
    mp.setattr(Synthesizer, "_prompt_codes", lambda self, wav: real(self, wav)[1:])


# Measured level-1 match per pair (training seed 1; seeds 2 and 3 alike): no word boundary 0.00
# on every pair; no <bos> 0.00; <eos> <bos> between 0.00 0.00 0.03 0.00 0.00; audio positions
# from 1 0.00; generated positions off by one 0.03 0.04 0.03 0.03 0.05; prompt's first frame
# lost 0.00. Not here: dropping the text's <eos> gives 0.40-0.84 (seed 1), but 0.36-1.00 with
# seed 2 and 0.76-1.00 with seed 3: the AR also stops where the valid text ends (the attention
# mask hides what follows), so that breakage is not reliably visible.
BREAKAGES = {
    "no word boundary between prompt and target text": _no_word_boundary,
    "no text <bos>": _collate_without("bos"),
    "<eos> <bos> between prompt and target text": _bos_eos_between,
    "audio positions from 1": _audio_positions_from_one,
    "generated positions off by one": _generated_positions_off_by_one,
    "prompt's first frame lost": _prompt_first_frame_lost,
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_a_train_synthesis_mismatch_breaks_the_match(trained, monkeypatch, breakage):
    BREAKAGES[breakage](monkeypatch)
    outputs = synthesize_pairs(trained)
    matches = level1_matches(trained, outputs)
    print(f"{breakage}: level-1 match per pair", " ".join(f"{m:.3f}" for m in matches))
    assert max(matches) < MIN_MATCH, f"{breakage}: the zero-shot output still matches ({matches})"


def test_no_stress_symbol_table_gives_unstressed_synthesis_text(tmp_path):
    """Regression: cuts phonemized with 'dmtts phonemize --no-stress' give a symbol table
    without stress marks, but synthesis phonemized its text with them: every stressed vowel
    became <unk>. The synthesis text must be the training symbols of the utterance."""
    from dmtts.text.phonemizer import Phonemizer
    from dmtts.text.symbols import UNK, SymbolTable
    from dmtts.tts.frontend import TTSText

    prompt, target = SENTENCES[2], SENTENCES[3]
    for stress in (False, True):
        whole = Phonemizer("en-us", with_stress=stress).phonemize(f"{prompt} {target}")
        SymbolTable.from_sequences([whole]).to_file(tmp_path / f"symbols{stress}.txt")
        text = TTSText("phonemes", tmp_path / f"symbols{stress}.txt")
        joined = text.join_words(text.text_symbols(prompt), text.text_symbols(target))
        assert joined == whole
        ids, _ = text.collate([joined])
        assert text.frontend.symbol_table.id(UNK) not in ids.tolist()[0]


def test_pairs_prompt_is_not_cut_shorter_than_its_transcript(tmp_path):
    """Regression: with --pairs, the prompt crop was cut to --prompt-seconds while its transcript
    (prompt_text, the words of the whole crop) was kept: a 5 s crop cut to 3 s gave the AR words
    the prompt does not speak. That combination is now an error before any synthesis."""
    import soundfile as sf
    from lhotse import CutSet, MonoCut, Recording

    from dmtts.errors import DmttsError
    from dmtts.tts.synthesize_pairs import _check_pairs

    wav = tmp_path / "p.wav"
    sf.write(wav, np.zeros(16000 * 6, dtype=np.float32), 16000)
    rec = Recording.from_file(wav)
    cut = MonoCut(id="t0", start=0, duration=1.0, channel=0, recording=rec,
                  custom={"prompt_duration": 5.0, "prompt_recording": rec.to_dict(), "prompt_text": "one two three",
                          "target_text": "Hello."})
    path = tmp_path / "pairs.jsonl.gz"
    CutSet.from_cuts([cut]).to_file(path)
    with pytest.raises(DmttsError, match="--prompt-seconds 3 would cut"):
        _check_pairs(str(path), None, 3.0)
    assert _check_pairs(str(path), None, 5.0) == 0 and _check_pairs(str(path), None, 0.0) == 0
