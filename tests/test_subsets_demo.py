"""Evaluation subsets and the demo corpus round trip."""

from __future__ import annotations

import numpy as np
import pytest
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment, load_manifest
from lhotse.supervision import AlignmentItem

from corpus_fixtures import tone
from dmtts.cli import main
from dmtts.data.demo_corpus import HELD_OUT_VOICE, VOICES, make_demo_corpus
from dmtts.data.demo_sentences import generate_sentences, spoken_sentences
from dmtts.data.subsets import codec_eval_subset, load_prompt_audio, tts_eval_pairs
from dmtts.data.trim import speech_span
from dmtts.errors import DmttsError


def _cuts(tmp_path, durations_by_speaker) -> CutSet:
    import soundfile as sf

    cuts = []
    for spk, durations in durations_by_speaker.items():
        for i, dur in enumerate(durations):
            path = tmp_path / f"{spk}_{i}.flac"
            sf.write(path, tone(dur, 16000, 150 + 30 * i, seed=i), 16000)
            rec = Recording.from_file(path, recording_id=f"{spk}-{i}")
            words = [AlignmentItem(symbol=f"w{k}", start=0.5 * k, duration=0.4) for k in range(int(dur * 2))]
            sup = SupervisionSegment(id=rec.id, recording_id=rec.id, start=0, duration=rec.duration,
                                     speaker=spk, text=f"text of {rec.id}", alignment={"word": words})
            cuts.append(MonoCut(id=rec.id, start=0, duration=rec.duration, channel=0,
                                recording=rec, supervisions=[sup]))
    return CutSet.from_cuts(cuts)


def test_codec_eval_subset_deterministic(tmp_path):
    cuts = _cuts(tmp_path, {"a": [1.0] * 6, "b": [1.0] * 6})
    first = [c.id for c in codec_eval_subset(cuts, 5, seed=42)]
    assert first == [c.id for c in codec_eval_subset(cuts, 5, seed=42)]
    assert len(set(first)) == 5
    assert first != [c.id for c in codec_eval_subset(cuts, 5, seed=7)]
    assert len(codec_eval_subset(cuts, 300, seed=42)) == 12  # all of them when fewer than asked


def test_librispeech_tts_pairs_constraints(tmp_path):
    cuts = _cuts(tmp_path, {"a": [3.5, 4.5, 6.0, 11.0], "b": [5.0, 2.0], "c": [4.2]})
    pairs = tts_eval_pairs(cuts, 4.0, 10.0, 3.0, seed=1)
    again = tts_eval_pairs(cuts, 4.0, 10.0, 3.0, seed=1)
    assert [c.to_dict() for c in pairs] == [c.to_dict() for c in again]  # deterministic per seed
    # c has a single utterance (no other prompt); b's only other utterance is shorter than 3 s.
    assert sorted(c.id for c in pairs) == ["a-1", "a-2"]
    for pair in pairs:
        custom = pair.custom
        assert 4.0 <= pair.duration <= 10.0
        assert custom["prompt_cut_id"] != pair.id
        assert custom["prompt_speaker"] == pair.supervisions[0].speaker
        prompt_cut = cuts[custom["prompt_cut_id"]]
        assert prompt_cut.supervisions[0].speaker == pair.supervisions[0].speaker
        assert custom["prompt_duration"] == 3.0
        assert 0 <= custom["prompt_start"] <= prompt_cut.duration - 3.0
        assert custom["target_text"] == pair.supervisions[0].text
        audio = load_prompt_audio(pair)
        assert audio.shape == (48000,)  # exactly 3 s at 16 kHz
        # Words fully inside the crop, from the word alignment.
        start = custom["prompt_start"]
        expected = [f"w{k}" for k in range(int(prompt_cut.duration * 2))
                    if 0.5 * k >= start - 1e-3 and 0.5 * k + 0.4 <= start + 3.0 + 1e-3]
        assert custom["prompt_text"] == " ".join(expected)


def test_vctk_pairs_cli_and_exclusion(tmp_path, capsys):
    cuts = _cuts(tmp_path, {"p1": [3.2, 2.0, 1.5], "p2": [3.5, 3.1]})
    cuts.to_file(tmp_path / "in.jsonl.gz")
    train = CutSet.from_cuts([c for c in cuts if c.supervisions[0].speaker == "p2"])
    train.to_file(tmp_path / "train.jsonl.gz")
    out = tmp_path / "pairs.jsonl.gz"
    assert main(["subset", "vctk-tts-eval", "--cuts", str(tmp_path / "in.jsonl.gz"), "--out", str(out),
                 "--exclude-speakers-in", str(tmp_path / "train.jsonl.gz")]) == 0
    pairs = load_manifest(out)
    assert sorted(c.id for c in pairs) == ["p1-1", "p1-2"]  # p1-0 is the only >= 3 s prompt
    assert all(c.custom["prompt_cut_id"] == "p1-0" for c in pairs)
    assert all(load_prompt_audio(c).shape == (48000,) for c in pairs)  # also after a disk round trip
    with pytest.raises(DmttsError, match="no target/prompt pairs"):
        tts_eval_pairs(cuts, 20.0, 30.0)
    # --prompt-crop end: the crop is the last 3 s of its utterance (ends on speech when trimmed);
    # the pairs themselves are the same as with a random crop
    assert main(["subset", "vctk-tts-eval", "--cuts", str(tmp_path / "in.jsonl.gz"), "--out", str(out),
                 "--prompt-crop", "end"]) == 0
    ends = load_manifest(out)
    assert all(c.custom["prompt_start"] == pytest.approx(3.2 - 3.0) for c in ends if c.custom["prompt_cut_id"] == "p1-0")
    assert sorted(c.id for c in ends) == sorted(c.id for c in tts_eval_pairs(cuts, None, None))


def test_subset_bad_input(tmp_path, capsys):
    assert main(["subset", "codec-eval", "--cuts", str(tmp_path / "none.jsonl.gz"), "--out", "x"]) == 2
    assert "none.jsonl.gz" in capsys.readouterr().err


def test_sentences_are_varied_and_deterministic():
    sents = generate_sentences(60, seed=3)
    assert sents == generate_sentences(60, seed=3) and len(set(sents)) == 60
    joined = " ".join(sents)
    assert any(ch.isdigit() for ch in joined) and "," in joined and "?" in joined or "!" in joined


def test_spoken_sentences_are_distinct_at_corpus_scale_and_read_as_written():
    """A corpus-sized draw never repeats a sentence (the AR must read, not recognise), words recur
    in many sentences, and the spoken form has no digits or symbols left for a synthesizer to
    expand its own way."""
    sents = spoken_sentences(3000, seed=42)
    assert len({s.lower() for s in sents}) == 3000
    assert not any(ch.isdigit() or ch in "$%&" for s in sents for ch in s)
    words = [w.strip(".,!?\"").lower() for s in sents for w in s.split()]
    vocab = set(words)
    assert len(vocab) > 400 and len(words) / len(vocab) > 20


def _flite_words(text: str) -> list[str]:
    """The words flite says for ``text`` (``flite -pw``), apostrophes joined."""
    import subprocess

    out = subprocess.run(["flite", "-voice", "slt", "-pw", "-t", text, "-o", "none"], capture_output=True,
                         text=True, check=True).stdout
    return out.replace(" '", "'").replace("'", "").split()


# flite -pw names a homograph by its pronunciation's lexicon entry: past-tense "read" is "red"
_FLITE_HOMOGRAPHS = {("read", "red")}


def _same_words(said: list[str], written: list[str]) -> bool:
    return len(said) == len(written) and all(s == w or (w, s) in _FLITE_HOMOGRAPHS for s, w in zip(said, written))


def test_transcripts_equal_what_flite_says():
    """flite reads digits, money and dates its own way ('May 3' as 'third', '$3.50' without
    'and'); the corpus gives it the spoken form, so its words are the transcript's."""
    import re
    import shutil

    if shutil.which("flite") is None:
        pytest.skip("flite is not installed (make system-deps)")
    sents = spoken_sentences(40, seed=7)
    for text in sents:
        expected = re.sub(r"[^a-z' ]", " ", text.lower()).replace("'", "").split()
        assert _same_words(_flite_words(text), expected), text
    # the written form would not match: flite expands digits differently from our normaliser
    written = next(s for s in generate_sentences(200, seed=7) if "$" in s)
    from dmtts.text.tts_input_norm import normalize_english

    spoken = re.sub(r"[^a-z' ]", " ", normalize_english(written).lower()).replace("'", "").split()
    assert not _same_words(_flite_words(written), spoken)


def test_demo_corpus_round_trip(tmp_path, capsys):
    corpus = tmp_path / "demo"
    assert main(["make-demo-corpus", "--output-dir", str(corpus), "--num-speakers", "3",
                 "--utts-per-speaker", "4", "--seed", "5"]) == 0
    flacs = sorted(corpus.rglob("*.flac"))
    assert len(flacs) == 12 and flacs[0].relative_to(corpus).parts == ("1001", "1", "1001-1-0000.flac")
    trans = (corpus / "1001/1/1001-1.trans.txt").read_text().splitlines()
    assert len(trans) == 4 and trans[0].startswith("1001-1-0000 ")
    speakers_txt = (corpus / "SPEAKERS.txt").read_text()
    assert "1001 | flite:slt" in speakers_txt and "1003 | festival:cmu_us_slt_arctic_hts" in speakers_txt
    assert (corpus / "SPEAKER_GROUPS.txt").read_text() == "1001 flite\n1002 flite\n1003 festival-hts\n"
    # Deterministic per seed: same texts when regenerated elsewhere.
    make_demo_corpus(tmp_path / "again", 3, 4, seed=5)
    assert (tmp_path / "again/1001/1/1001-1.trans.txt").read_text() == "\n".join(trans) + "\n"
    out = tmp_path / "data"
    assert main(["prepare", "demo", "--corpus-dir", str(corpus), "--output-dir", str(out), "--trim-silence"]) == 0
    parts = {p: load_manifest(out / f"cuts/demo_cuts_{p}.jsonl.gz") for p in ("train", "dev", "test")}
    ids = [c.id for cs in parts.values() for c in cs]
    assert len(ids) == len(set(ids)) == 12  # every utterance in exactly one part
    # every utterance its own sentence, so no dev/test text occurs in training
    texts = {p: [c.supervisions[0].text for c in cs] for p, cs in parts.items()}
    assert len({t for ts in texts.values() for t in ts}) == 12
    assert not set(texts["train"]) & (set(texts["dev"]) | set(texts["test"]))
    # trimmed: every cut starts and ends on speech, supervision spans the cut
    assert sum(c.recording.duration - c.duration for c in parts["train"]) > 0.1 * len(parts["train"])
    for cut in parts["train"]:
        # speech starts within the 50 ms margin (+ one 10 ms hop of rounding) of each end
        start, end = speech_span(cut.load_audio()[0], 16000)
        assert start <= 0.061 and end >= cut.duration - 0.061, (cut.id, start, end, cut.duration)
        sup = cut.supervisions[0]
        assert sup.start == 0 and abs(sup.duration - cut.duration) < 1e-3
    train_speakers = {c.supervisions[0].speaker for c in parts["train"]}
    test_speakers = {c.supervisions[0].speaker for c in parts["test"]}
    assert "1003" not in train_speakers and "1003" in test_speakers  # held out for zero-shot
    cut = parts["test"][0]
    audio = cut.load_audio()
    assert cut.sampling_rate == 16000 and audio.shape[1] > 16000 * 0.8 and np.abs(audio).max() > 0.05
    line = {ln.split(" ", 1)[0]: ln.split(" ", 1)[1] for ln in trans}
    first_train = next(c for c in parts["train"] if c.id in line)
    assert first_train.supervisions[0].custom["orig_text"] == line[first_train.id]


def test_demo_voices_differ(tmp_path):
    from dmtts.data.demo_corpus import synthesize

    text = "The same words for every voice."
    voices = list(VOICES) + [HELD_OUT_VOICE]
    audios = [synthesize(v, text) for v in voices]
    for i in range(len(audios)):
        for j in range(i + 1, len(audios)):
            a, b = audios[i], audios[j]
            n = min(len(a), len(b))
            assert len(a) != len(b) or not np.allclose(a[:n], b[:n], atol=1e-3), (voices[i], voices[j])


def test_speech_span_against_hand_computation():
    """0.5 s of digital silence, 1 s of tone, 0.3 s of -50 dB noise: the span is the tone plus the
    50 ms margins (frames 25 ms, hop 10 ms)."""
    rng = np.random.default_rng(0)
    tone_part = 0.5 * np.sin(2 * np.pi * 200 * np.arange(16000) / 16000)
    audio = np.concatenate([np.zeros(8000), tone_part, 0.5 * 10 ** (-50 / 20) * rng.standard_normal(4800)])
    start, end = speech_span(audio, 16000)
    # first frame fully inside the tone starts at 0.50 s, but frames from 0.48 s already hold
    # enough tone (within 40 dB of the peak): 0.48 - 0.05 = 0.43; the last frame with tone ends
    # at 1.52 s (frame 149: 1.49-1.515 s): 1.515 + 0.05 = 1.565
    assert start == pytest.approx(0.43, abs=0.011) and end == pytest.approx(1.565, abs=0.011)
    assert speech_span(np.zeros(16000), 16000) == (0.0, 1.0)  # nothing to keep: untouched
