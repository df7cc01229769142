"""Evaluation subsets and the demo corpus round trip."""

from __future__ import annotations

import numpy as np
import pytest
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment, load_manifest
from lhotse.supervision import AlignmentItem

from corpus_fixtures import tone
from dmtts.cli import main
from dmtts.data.demo_corpus import HELD_OUT_VOICE, VOICES, generate_sentences, make_demo_corpus
from dmtts.data.subsets import codec_eval_subset, load_prompt_audio, tts_eval_pairs
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


def test_subset_bad_input(tmp_path, capsys):
    assert main(["subset", "codec-eval", "--cuts", str(tmp_path / "none.jsonl.gz"), "--out", "x"]) == 2
    assert "none.jsonl.gz" in capsys.readouterr().err


def test_sentences_are_varied_and_deterministic():
    sents = generate_sentences(60, seed=3)
    assert sents == generate_sentences(60, seed=3) and len(set(sents)) == 60
    joined = " ".join(sents)
    assert any(ch.isdigit() for ch in joined) and "," in joined and "?" in joined or "!" in joined


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
    # Deterministic per seed: same texts when regenerated elsewhere.
    make_demo_corpus(tmp_path / "again", 3, 4, seed=5)
    assert (tmp_path / "again/1001/1/1001-1.trans.txt").read_text() == "\n".join(trans) + "\n"
    out = tmp_path / "data"
    assert main(["prepare", "demo", "--corpus-dir", str(corpus), "--output-dir", str(out)]) == 0
    parts = {p: load_manifest(out / f"cuts/demo_cuts_{p}.jsonl.gz") for p in ("train", "dev", "test")}
    ids = [c.id for cs in parts.values() for c in cs]
    assert len(ids) == len(set(ids)) == 12  # every utterance in exactly one part
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
