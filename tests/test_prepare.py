"""Every preparer on tiny corpora in the real on-disk layouts, through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from lhotse import CutSet, RecordingSet, SupervisionSet, load_manifest

from corpus_fixtures import make_librispeech, make_libriheavy, make_libritts, make_vctk
from dmtts.cli import main
from dmtts.data.transcript_norm import normalize_transcript


def _load_cuts(path: Path) -> CutSet:
    cuts = load_manifest(path)
    assert isinstance(cuts, CutSet)
    return cuts


def test_librispeech(tmp_path, capsys):
    corpus = make_librispeech(tmp_path, corrupt=True)
    out = tmp_path / "data"
    assert main(["prepare", "librispeech", "--corpus-dir", str(corpus), "--output-dir", str(out)]) == 0
    report = capsys.readouterr().out
    assert "1 unreadable audio file(s) skipped" in report and "1272-128104-0003.flac" in report
    recs = load_manifest(out / "manifests/librispeech_recordings_dev-clean.jsonl.gz")
    sups = load_manifest(out / "manifests/librispeech_supervisions_dev-clean.jsonl.gz")
    assert isinstance(recs, RecordingSet) and isinstance(sups, SupervisionSet)
    cuts = _load_cuts(out / "cuts/librispeech_cuts_dev-clean.jsonl.gz")
    assert len(cuts) == 6  # 2 speakers x 3 utterances; the corrupt file is skipped
    cut = cuts["1272-128104-0001"]
    assert cut.sampling_rate == 16000 and cut.duration == pytest.approx(1.5)
    assert cut.supervisions[0].speaker == "1272"
    assert cut.supervisions[0].text == "HELLO WORLD NUMBER 1 FROM SPEAKER 1272"
    assert cut.supervisions[0].custom["orig_text"] == "HELLO WORLD NUMBER 1 FROM SPEAKER 1272"
    # Manifests point at the real corpus, not at the temporary view that hid the corrupt file.
    assert Path(cut.recording.sources[0].source).parent == corpus / "dev-clean/1272/128104"
    assert cut.load_audio().shape == (1, 24000)
    # Second run: the part is already prepared and skipped.
    assert main(["prepare", "librispeech", "--corpus-dir", str(corpus), "--output-dir", str(out)]) == 0
    assert "already prepared" in capsys.readouterr().out


def test_librispeech_duration_filter_and_text_norm(tmp_path):
    corpus = make_librispeech(tmp_path)
    out = tmp_path / "data"
    assert main(["prepare", "librispeech", "--corpus-dir", str(corpus), "--output-dir", str(out),
                 "--min-duration", "1.2", "--max-duration", "1.8", "--text-norm", "lower"]) == 0
    cuts = _load_cuts(out / "cuts/librispeech_cuts_dev-clean.jsonl.gz")
    assert sorted(c.duration for c in cuts) == [1.5, 1.5]
    assert all(c.supervisions[0].text == c.supervisions[0].text.lower() for c in cuts)


def test_libritts_normalized_text_and_resampling(tmp_path):
    corpus = make_libritts(tmp_path)
    out = tmp_path / "data"
    assert main(["prepare", "libritts", "--corpus-dir", str(corpus), "--output-dir", str(out),
                 "--parts", "dev-clean"]) == 0
    cuts = _load_cuts(out / "cuts/libritts_cuts_dev-clean.jsonl.gz")
    assert len(cuts) == 6
    cut = cuts["84_121123_000001_000000"]
    sup = cut.supervisions[0]
    assert sup.text == "Mister Smith paid four dollars on the day."  # the .normalized text
    assert sup.custom["orig_text"] == "Mr. Smith paid $4 on the 2st “day”."  # original, untouched
    assert cut.sampling_rate == 16000
    audio = cut.load_audio()
    assert audio.shape[1] == pytest.approx(1.2 * 16000, abs=2)
    recs = load_manifest(out / "manifests/libritts_recordings_dev-clean.jsonl.gz")
    assert next(iter(recs)).sampling_rate == 24000  # manifests keep the original rate


def test_vctk_missing_transcripts(tmp_path, caplog):
    corpus = make_vctk(tmp_path)
    out = tmp_path / "data"
    assert main(["prepare", "vctk", "--corpus-dir", str(corpus), "--output-dir", str(out)]) == 0
    cuts = _load_cuts(out / "cuts/vctk_cuts_all.jsonl.gz")
    speakers = sorted({c.supervisions[0].speaker for c in cuts})
    assert speakers == ["p225", "p226"]  # p315 has no transcripts; p226_003 has no audio
    assert len(cuts) == 5
    assert all(c.sampling_rate == 16000 for c in cuts)
    assert cuts["p225_002"].supervisions[0].text == "Please call Stella number 2."
    assert cuts["p225_002"].load_audio().shape == (1, 16000)


def test_libriheavy_reroots_audio(tmp_path, capsys):
    manifests, audio = make_libriheavy(tmp_path)
    out = tmp_path / "data"
    assert main(["prepare", "libriheavy", "--corpus-dir", str(manifests), "--audio-dir", str(audio),
                 "--output-dir", str(out)]) == 0
    assert "unreadable audio file(s) skipped" in capsys.readouterr().out  # the missing recording
    cuts = _load_cuts(out / "cuts/libriheavy_cuts_small.jsonl.gz")
    assert len(cuts) == 4
    cut = cuts["small/100/sea_fairies_librivox/01_baum_1"]
    assert cut.start == 3.0 and cut.duration == 2.0
    assert Path(cut.recording.sources[0].source) == audio / "small/100/sea_fairies_librivox/01_baum.flac"
    sup = cut.supervisions[0]
    assert sup.text == "\"Hello,\" said Trot; it's 2 o'clock."  # first of custom["texts"], cleaned
    assert sup.custom["orig_text"] == "“Hello,” said Trot; it's 2 o'clock."
    assert cut.load_audio().shape == (1, 32000)
    assert (out / "manifests/libriheavy_recordings_small.jsonl.gz").is_file()


@pytest.mark.parametrize("corpus,layout_hint", [
    ("librispeech", "no LibriSpeech parts found"),
    ("libritts", "no LibriTTS parts found"),
    ("vctk", "does not look like VCTK"),
    ("libriheavy", "needs --audio-dir"),
    ("demo", "holds no demo corpus"),
])
def test_malformed_corpus_dir_is_one_line_error(tmp_path, capsys, corpus, layout_hint):
    (tmp_path / "empty").mkdir()
    rc = main(["prepare", corpus, "--corpus-dir", str(tmp_path / "empty"), "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and layout_hint in err and "\n" not in err and "Traceback" not in err


def test_missing_corpus_dir_and_part(tmp_path, capsys):
    assert main(["prepare", "librispeech", "--corpus-dir", str(tmp_path / "nope"), "--output-dir", "o"]) == 2
    assert str(tmp_path / "nope") in capsys.readouterr().err
    corpus = make_librispeech(tmp_path)
    assert main(["prepare", "librispeech", "--corpus-dir", str(corpus), "--output-dir", "o",
                 "--parts", "train-clean-100"]) == 2
    assert "train-clean-100" in capsys.readouterr().err


@pytest.mark.parametrize("text,mode,expected", [
    ("  “Hello”  world\u2014again… ", "clean", "\"Hello\" world - again..."),
    ("It's Dr. Who's 2nd “TARDIS”!", "upper", "IT'S DR WHO'S 2ND TARDIS"),
    ("'Quoted' words, here.", "lower", "quoted words here"),
])
def test_text_normalisation(text, mode, expected):
    assert normalize_transcript(text, mode) == expected
