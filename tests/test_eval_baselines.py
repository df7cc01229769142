"""Classic codecs as baselines of ``dmtts eval codec`` (codec2 / Opus through their Debian tools),
per-speaker and per-group tables, and how the report flags a model whose training a cap cut short."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dmtts.errors import DmttsError
from dmtts.eval import classic_codecs
from dmtts.eval.classic_codecs import ClassicCodec, parse_baseline, parse_baselines
from dmtts.eval.codec_eval import evaluate_codec
from dmtts.eval.group_tables import Grouping, read_speaker_groups
from dmtts.eval.metrics import EvalModels
from dmtts.eval.signal_metrics import stoi_score

SR = 16000
HAVE_CODEC2 = shutil.which("c2enc") is not None and shutil.which("c2dec") is not None
HAVE_OPUS = shutil.which("opusenc") is not None and shutil.which("opusdec") is not None
HAVE_ESPEAK = shutil.which("espeak-ng") is not None
needs_tools = pytest.mark.skipif(not (HAVE_CODEC2 and HAVE_OPUS),
                                 reason="apt-get install -y codec2 opus-tools (make system-deps)")
TEXTS = ["the birch canoe slid on the smooth planks", "glue the sheet to the dark blue background",
         "rice is often served in round bowls", "the juice of lemons makes fine punch"]


def _harmonic(seconds: float, f0: float, sr: int = SR) -> np.ndarray:
    """A vowel-like tone with a syllable-rate envelope (speech-like enough for the vocoders)."""
    t = np.arange(int(seconds * sr)) / sr
    pitch = f0 + 15 * np.sin(2 * np.pi * 0.8 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / sr
    wav = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.55 + 0.45 * np.sin(2 * np.pi * 3 * t))
    return (0.15 * wav).astype(np.float32)


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    """About 2.5 s of espeak-ng speech at 16 kHz (a harmonic tone without espeak-ng); its length
    is deliberately not a whole number of codec frames."""
    if not HAVE_ESPEAK:
        return _harmonic(2.4567, 130.0)
    from dmtts.audio import load_audio

    path = tmp_path_factory.mktemp("speech") / "s.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), TEXTS[0]], check=True)
    wav = load_audio(path, SR)[0]
    return wav[: len(wav) - len(wav) % 160 + 77]  # 77 samples past a 10 ms boundary


# ---------------------------------------------------------------------------------------- the codecs

@needs_tools
def test_c2enc_keeps_whole_frames_only(tmp_path):
    """Why the input is padded: c2enc drops a partial last frame (160 samples at 3200, 320 at 1300)."""
    (np.arange(1000) % 50 * 200).astype("<i2").tofile(tmp_path / "in.raw")
    for mode, frame in (("3200", 160), ("1300", 320)):
        subprocess.run(["c2enc", mode, str(tmp_path / "in.raw"), str(tmp_path / "c.bit")], check=True)
        subprocess.run(["c2dec", mode, str(tmp_path / "c.bit"), str(tmp_path / "out.raw")], check=True,
                       capture_output=True)
        assert (tmp_path / "out.raw").stat().st_size // 2 == 1000 // frame * frame


@needs_tools
@pytest.mark.parametrize("spec, name, kbps", [("codec2:3200", "codec2_3200", 3.2), ("opus:6", "opus_6kbps", 6.0)])
def test_roundtrip_length_rate_and_signal(speech, spec, name, kbps):
    codec = parse_baseline(spec)
    assert codec.name == name and codec.bitrate_kbps == kbps
    n = len(speech)
    raw = codec.decoded(speech, SR)
    if codec.kind == "codec2":
        # 8 kHz: ceil(n / 2) samples, padded to whole frames past the 160-sample decoder delay, the
        # delay dropped and ceil(n / 2) samples kept; resampled x2 that is 2 * ceil(n / 2)
        assert len(raw) == 2 * math.ceil(n / 2)
    else:
        assert len(raw) == n  # Ogg pre-skip and end granule: opusdec returns exactly the input's samples
    out = codec.roundtrip(speech, SR)
    assert out.dtype == np.float32 and out.shape == speech.shape  # the rule: always the input's length
    rms_in, rms_out = np.sqrt(np.mean(speech ** 2)), np.sqrt(np.mean(out ** 2))
    assert 0.2 * rms_in < rms_out < 5 * rms_in  # not silence, not blown up
    assert codec.roundtrip(speech, SR).tobytes() == out.tobytes()  # deterministic (no dither)
    if HAVE_ESPEAK:  # aligned: STOI drops when the output is moved by another 20 ms
        late = np.concatenate([np.zeros(320, np.float32), out[:-320]])
        assert stoi_score(speech, out) > stoi_score(speech, late) + 0.05
        assert stoi_score(speech, out) > 0.6


@needs_tools
def test_roundtrip_at_another_rate(speech):
    from dmtts.audio import resample

    wav = resample(speech, SR, 22050)
    for spec in ("codec2:1300", "opus:9"):
        out = parse_baseline(spec).roundtrip(wav, 22050)
        assert out.shape == wav.shape and np.sqrt(np.mean(out ** 2)) > 0.2 * np.sqrt(np.mean(wav ** 2))


@pytest.mark.parametrize("spec", ["codec2:3100", "codec2", "opus:5", "opus:300", "opus:fast", "mp3:128", "opus6"])
def test_bad_spec_names_the_accepted_forms(spec):
    with pytest.raises(DmttsError, match=r"--baselines .*codec2:<mode> \(mode one of 3200 .*opus:<kbps> \(6 to 256"):
        parse_baseline(spec)


def test_spec_forms_are_normalised():
    assert parse_baseline("codec2:700c") == ClassicCodec("codec2", "700C")
    assert parse_baseline("opus:12.50").name == "opus_12.5kbps"
    assert parse_baseline("codec2:700c").bitrate_kbps == 0.7


@needs_tools
def test_repeated_spec_is_an_error():
    with pytest.raises(DmttsError, match="given twice"):
        parse_baselines(["opus:6", "opus:6.0"])


def test_missing_tool_names_the_package(tmp_path, monkeypatch, capsys):
    from dmtts.cli import main

    monkeypatch.setenv("PATH", str(tmp_path))  # neither codec2 nor opus-tools here
    with pytest.raises(DmttsError, match=r"'c2enc' is not on PATH: install it with `apt-get install -y codec2`"):
        parse_baselines(["codec2:3200"])
    with pytest.raises(DmttsError, match=r"'opusenc' is not on PATH: .*apt-get install -y opus-tools"):
        parse_baselines(["opus:6"])
    # the command says so in one line, before reading any cut
    rc = main(["eval", "codec", "--cuts", str(tmp_path / "none.jsonl.gz"), "--output-dir", str(tmp_path / "out"),
               "--baselines", "opus:6"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "apt-get install -y opus-tools" in err


# ---------------------------------------------------------------------------------------- in the tables

class FakeASR:
    """The reference text for loud audio, one word short for the second speaker's utterances."""

    name = "fake-asr"

    def __init__(self):
        self.calls = 0

    def transcribe(self, wavs):
        self.calls += len(wavs)
        return [self.text_for.get(round(len(w) / SR, 2), "") for w in wavs]


class FakeSpeaker:
    name = "fake-speaker"

    def embed(self, wavs):
        return np.stack([[np.sqrt(np.mean(w ** 2)), np.mean(np.abs(np.diff(w))), 1.0] for w in wavs])


def _cuts(tmp_path: Path, speakers=("spkA", "spkB", "spkA", "spkC")) -> tuple[Path, FakeASR]:
    from lhotse import CutSet, Recording, SupervisionSegment

    asr = FakeASR()
    asr.text_for = {}
    cuts = []
    for i, (text, speaker) in enumerate(zip(TEXTS, speakers)):
        wav = _harmonic(0.8 + 0.15 * i, 110.0 + 30 * i)
        path = tmp_path / "audio" / f"utt{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, wav, SR)
        asr.text_for[round(len(wav) / SR, 2)] = text if speaker != "spkB" else text.rsplit(" ", 1)[0]
        rec = Recording.from_file(path, recording_id=f"utt{i}")
        cut = rec.to_cut()
        cut.supervisions = [SupervisionSegment(f"utt{i}", f"utt{i}", 0.0, rec.duration, text=text, speaker=speaker)]
        cuts.append(cut)
    CutSet.from_cuts(cuts).to_file(tmp_path / "cuts.jsonl.gz")
    return tmp_path / "cuts.jsonl.gz", asr


@pytest.fixture(scope="module")
def tiny_codec():
    import torch

    from dmtts.codec.config import model_config
    from dmtts.codec.model import DMCodec

    torch.manual_seed(0)
    cfg = model_config("tiny")
    cfg.kmeans_init = False
    return DMCodec(cfg).eval()


def _csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {r.get("system") or r["utt_id"]: r for r in csv.DictReader(f)}


@needs_tools
def test_baselines_are_rows_of_every_table_and_cached(tmp_path, tiny_codec, monkeypatch):
    cuts, asr = _cuts(tmp_path)
    models = EvalModels(asr=asr, sim=FakeSpeaker())
    baselines = parse_baselines(["codec2:3200", "opus:6"])
    out = tmp_path / "eval"
    metrics = ["wer", "stoi", "sim"]
    result = evaluate_codec(cuts, out, codec=tiny_codec, n_qs=[2], models=models, metrics=metrics, n_figure=2,
                            baselines=baselines, grouping=Grouping("speaker"))
    summary = _csv(out / "summary.csv")
    assert list(summary) == ["ground_truth", "dmcodec_nq2", "codec2_3200", "opus_6kbps"]
    assert summary["codec2_3200"]["bitrate_kbps"] == "3.2" and summary["opus_6kbps"]["bitrate_kbps"] == "6"
    for name in ("codec2_3200", "opus_6kbps"):
        scores = _csv(out / f"scores_{name}.csv")
        assert list(scores) == ["utt0", "utt1", "utt2", "utt3"]
        stoi = [float(r["stoi"]) for r in scores.values()]
        assert all(0.0 < s <= 1.0 for s in stoi)
        assert float(summary[name]["stoi"]) == pytest.approx(np.mean(stoi), abs=1e-5)
        assert len(list((out / "recon" / name).glob("*.wav"))) == 4
        wav, sr = sf.read(out / "recon" / name / "utt1.wav")
        assert sr == SR and len(wav) == len(sf.read(tmp_path / "audio" / "utt1.wav")[0])
    md = (out / "summary.md").read_text()
    assert "| codec2_3200 | 3.2 | 4 |" in md and "c2enc/c2dec" in md and "opusenc --bitrate" in md
    assert (out / "mel_spectrograms.png").stat().st_size > 1000

    # per speaker: the main table's definitions over each speaker's utterances
    groups = list(csv.DictReader(open(out / "summary_groups.csv")))
    by = {(r["speaker"], r["system"]): r for r in groups}
    assert sorted({r["speaker"] for r in groups}) == ["spkA", "spkB", "spkC"]
    stoi = _csv(out / "scores_codec2_3200.csv")
    assert by[("spkA", "codec2_3200")]["n"] == "2"
    assert float(by[("spkA", "codec2_3200")]["stoi"]) == pytest.approx(
        (float(stoi["utt0"]["stoi"]) + float(stoi["utt2"]["stoi"])) / 2, abs=1e-5)
    # spkB's one utterance misses its last word (of 8): WER 100/8 for the originals; spkA none
    assert float(by[("spkB", "ground_truth")]["wer"]) == pytest.approx(100 / 8, abs=1e-3)
    assert float(by[("spkA", "ground_truth")]["wer"]) == 0.0
    assert result["groups_md"].read_text().count("| spkA |") == 4

    # the report carries the baselines and the per-speaker table
    from dmtts.eval.report import build_report

    report = build_report(codec_eval=out)
    assert "| opus_6kbps | 6 |" in report and "per speaker" in report

    # a rerun encodes nothing again; a baselines-only run (no codec) reuses the same cache
    calls = []
    monkeypatch.setattr(ClassicCodec, "roundtrip", lambda self, wav, sr: calls.append(self.name))
    asr.calls = 0
    evaluate_codec(cuts, out, codec=tiny_codec, n_qs=[2], models=models, metrics=metrics, n_figure=0,
                   baselines=baselines)
    assert calls == [] and asr.calls == 0 and not (out / "summary_groups.md").exists()
    evaluate_codec(cuts, out, models=models, metrics=metrics, n_figure=0, baselines=baselines[:1])
    assert calls == [] and list(_csv(out / "summary.csv")) == ["ground_truth", "codec2_3200"]


def test_speaker_groups_file_and_missing_speakers(tmp_path, tiny_codec):
    cuts, asr = _cuts(tmp_path)
    groups = tmp_path / "groups.txt"
    groups.write_text("# speaker group\nspkA flite\nspkB  flite\n\n")
    with pytest.raises(DmttsError, match=r"--speaker-groups .* no group for the speaker\(s\) spkC"):
        evaluate_codec(cuts, tmp_path / "e", codec=tiny_codec, n_qs=[1], models=EvalModels(asr=asr),
                       metrics=["wer"], grouping=Grouping.from_options(None, groups))
    groups.write_text("spkA flite\nspkB flite\nspkC espeak\n")
    assert read_speaker_groups(groups) == {"spkA": "flite", "spkB": "flite", "spkC": "espeak"}
    out = tmp_path / "eval"
    evaluate_codec(cuts, out, codec=tiny_codec, n_qs=[1], models=EvalModels(asr=asr), metrics=["wer"],
                   n_figure=0, grouping=Grouping.from_options("speaker", groups))
    rows = {(r["group"], r["system"]): r for r in csv.DictReader(open(out / "summary_groups.csv"))}
    # flite: utt0, utt1 (one word missing of 8), utt2 -> 1 error in 8 + 8 + 7 words, pooled; the
    # utterance mean is (0 + 12.5 + 0) / 3
    assert rows[("flite", "ground_truth")]["n"] == "3" and rows[("espeak", "ground_truth")]["n"] == "1"
    assert float(rows[("flite", "ground_truth")]["wer"]) == pytest.approx(100 / 23, abs=1e-3)
    assert float(rows[("flite", "ground_truth")]["wer_utt"]) == pytest.approx(100 / 24, abs=1e-3)
    for bad, match in (("spkA flite extra\n", "line 1: .* 3 columns"), ("spkA a\nspkA b\n", "in two groups"),
                       ("# nothing\n", "holds no")):
        groups.write_text(bad)
        with pytest.raises(DmttsError, match=match):
            read_speaker_groups(groups)
    with pytest.raises(DmttsError, match="does not exist"):
        read_speaker_groups(tmp_path / "nope.txt")


def test_cuts_without_speaker_cannot_be_grouped(tmp_path, tiny_codec):
    cuts, asr = _cuts(tmp_path, speakers=("spkA", None, "spkA", "spkC"))
    with pytest.raises(DmttsError, match="cut 'utt1' has no speaker"):
        evaluate_codec(cuts, tmp_path / "e", codec=tiny_codec, n_qs=[1], models=EvalModels(asr=asr),
                       metrics=["wer"], grouping=Grouping("speaker"))


# ---------------------------------------------------------------------------------------- capped training

def test_capped_training_is_flagged_in_summary_and_report(tmp_path, tiny_codec):
    from dmtts.eval.report import build_report, write_report

    cuts, asr = _cuts(tmp_path)
    capped = {"steps": 238, "max_steps": 1000, "epochs": 3, "minutes": 10.02, "max_minutes": 10.0, "capped": True}
    full = dict(capped, steps=1000, minutes=31.5, max_minutes=60.0, capped=False, averaged_steps=[900, 950, 1000])
    for name, block in (("capped", capped), ("full", full)):
        tiny_codec.save_pretrained(tmp_path / name, extra_config={"training": block})
        evaluate_codec(cuts, tmp_path / f"eval_{name}", model_dir=tmp_path / name, n_qs=[1],
                       models=EvalModels(asr=asr), metrics=["wer"], n_figure=0)
    tiny_codec.save_pretrained(tmp_path / "plain")  # no training block: nothing is said
    evaluate_codec(cuts, tmp_path / "eval_plain", model_dir=tmp_path / "plain", n_qs=[1], models=EvalModels(asr=asr),
                   metrics=["wer"], n_figure=0)

    md = (tmp_path / "eval_capped" / "summary.md").read_text()
    assert f"codec `{(tmp_path / 'capped').resolve()}`: trained 238 of 1000 configured steps in 10.02 minutes " \
           "(cap 10), 3 epochs. **Warning: the codec model" in md
    assert "stopped its training after 238 of 1000 configured steps" in md
    full_md = (tmp_path / "eval_full" / "summary.md").read_text()
    assert "trained 1000 of 1000 configured steps" in full_md and "Warning" not in full_md
    assert "Weights: the mean of the checkpoints at steps 900, 950, 1000." in full_md
    assert "Weights:" not in md  # said only of an averaged export
    assert "Training of the evaluated models" not in (tmp_path / "eval_plain" / "summary.md").read_text()
    assert json.loads((tmp_path / "eval_plain" / "trained_models.json").read_text()) == []
    assert json.loads((tmp_path / "eval_capped" / "trained_models.json").read_text())[0]["training"] == capped

    report = build_report(codec_eval=[tmp_path / "eval_full", tmp_path / "eval_capped", tmp_path / "eval_plain"])
    head = report.split("## Codec:")[0]
    assert head.count("**Warning: the codec model") == 1 and "238 of 1000" in head
    assert "**Warning" not in build_report(codec_eval=[tmp_path / "eval_full", tmp_path / "eval_plain"])
    page = write_report(tmp_path / "r.md", codec_eval=tmp_path / "eval_capped", echo=False).with_suffix(".html")
    assert "<b>Warning: the codec model" in page.read_text()


def test_tts_eval_reads_the_synthesis_models(tmp_path):
    """``dmtts eval tts`` finds the AR/NAR/codec of ``synthesize --pairs`` in its job settings."""
    from dmtts.eval.trained_models import synthesis_models, trained_models

    for role in ("ar", "nar", "codec"):
        (tmp_path / role).mkdir()
        block = {"steps": 50 if role == "nar" else 100, "max_steps": 100, "epochs": 1, "minutes": 2.0,
                 "max_minutes": 2.0 if role == "nar" else 0.0, "capped": role == "nar"}
        (tmp_path / role / "config.json").write_text(json.dumps({"training": block} if role != "codec" else {}))
    (tmp_path / "synth" / "progress").mkdir(parents=True)
    settings = {k: str(tmp_path / k) for k in ("ar", "nar", "codec")}
    (tmp_path / "synth" / "progress" / "meta.json").write_text(json.dumps({"settings": settings}))
    entries = trained_models(synthesis_models(tmp_path / "synth"))
    assert [(e["role"], e["training"]["capped"]) for e in entries] == [("AR", False), ("NAR", True)]
    assert synthesis_models(tmp_path / "elsewhere", tmp_path / "codec") == [("codec", tmp_path / "codec")]


def test_tools_are_looked_up_on_path(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DmttsError, match="Debian package codec2"):
        classic_codecs.require_tool("c2dec")
