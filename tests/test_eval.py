"""Evaluation: metrics, the codec / TTS benchmarks (tiny models, fake ASR), ASO significance."""

from __future__ import annotations

import csv
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dmtts.errors import DmttsError
from dmtts.eval import metrics as M
from dmtts.eval.significance import BETTER, DOMINANT, NONE, aso_epsilon, compare_systems
from dmtts.eval.wer_norm import normalize_text

SR = 16000
HAVE_ESPEAK = shutil.which("espeak-ng") is not None


STELLA = "Please call Stella and ask her to bring these things."


def _speech(path: Path, text: str = STELLA, voice: str = "en-us") -> np.ndarray:
    """A ~2 s espeak-ng clip (16 kHz) written to ``path``; a synthetic vowel-like signal without espeak."""
    if HAVE_ESPEAK:
        raw = path.with_suffix(".raw.wav")
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), text], check=True)
        from dmtts.audio import load_audio

        wav = load_audio(raw, SR)[0]
    else:
        t = np.arange(int(1.8 * SR)) / SR
        f0 = 120 + 20 * np.sin(2 * np.pi * 0.7 * t)
        wav = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / SR) / k for k in range(1, 15))
        wav = (0.2 * wav * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)) ** 2).astype(np.float32)
    sf.write(path, wav, SR, subtype="PCM_16")
    return wav.astype(np.float32)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> np.ndarray:
    return _speech(tmp_path_factory.mktemp("clip") / "a.wav")


def _noisy(wav: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(len(wav)).astype(np.float32)
    noise *= np.sqrt(np.mean(wav ** 2) / np.mean(noise ** 2) / 10 ** (snr_db / 10))
    return (wav + noise).astype(np.float32)


# ---------------------------------------------------------------------------------------- text / WER

@pytest.mark.parametrize("raw, expected", [
    ("Hello, World!", "hello world"),
    ("  MR. SMITH'S   dog\n", "mr smiths dog"),
    ("I can't go; it's 5 o'clock.", "i can not go its five oclock"),
    ("He won't pay $20 & 10%.", "he will not pay twenty dollars and ten percent"),
    ("The 21st of May, 1990 [laughter] um yes", "the twenty first of may nineteen ninety yes"),
    ("Café — naïve well-known", "cafe naive well known"),
    ("1,250 men", "one thousand two hundred fifty men"),
])
def test_normaliser(raw, expected):
    assert normalize_text(raw) == expected


def test_normaliser_keeps_digits_when_asked():
    assert normalize_text("Room 42!", numbers_to_words=False) == "room 42"


def test_wer_and_wil():
    assert M.word_errors("Hello world, it's FIVE.", "hello world its 5", "dmtts").wer == 0.0
    assert M.word_errors("Hello world, it is FIVE.", "hello world it's 5").wer == 0.0
    e = M.word_errors("a b c d", "a x c")  # 1 sub + 1 del over 4 words; H=2, P=3
    assert e.wer == pytest.approx(50.0)
    assert e.wil == pytest.approx(100 * (1 - (2 / 4) * (2 / 3)))
    assert M.word_errors("a b", "").wer == 100.0 and M.word_errors("a b", "").wil == 100.0
    assert math.isnan(M.word_errors("[noise]", "a").wer)
    wer, wil = M.corpus_rates([M.word_errors("a b c d", "a b c d"), M.word_errors("a b", "x b")])
    assert wer == pytest.approx(100 / 6)


def test_whisper_normaliser_is_the_default_and_ours_is_named():
    from dmtts.eval.wer_norm import load_text_normalizer

    # Whisper's English normaliser standardises spelling and titles (ours scored these as errors)
    assert M.word_errors("THE COLOUR GREY, MR. SMITH", "the color gray mister smith").wer == 0.0
    assert M.word_errors("THE COLOUR GREY", "the color gray", "dmtts").wer == pytest.approx(200 / 3)
    # where ours adds something: '&' is 'and' (Whisper's deletes it)
    assert M.word_errors("rock and roll", "rock & roll", "dmtts").wer == 0.0
    assert M.word_errors("rock and roll", "rock & roll").wer == pytest.approx(100 / 3)
    assert load_text_normalizer("whisper")("  Twenty-one  dollars ") == "$21"
    assert "whisper-normalizer" in M.EvalModels(asr=lambda w: [""] * len(w)).describe(["wer"])["wer"]
    assert "dmtts.eval.wer_norm" in M.EvalModels(text_norm="dmtts").text_norm.name
    with pytest.raises(DmttsError, match="--text-norm.*whisper or dmtts"):
        load_text_normalizer("nope")


# ---------------------------------------------------------------------------------------- signal metrics

def test_identical_audio_scores_perfectly(clip):
    assert M.stoi_score(clip, clip) == pytest.approx(1.0, abs=1e-6)
    assert M.pesq_wb(clip, clip) > 4.4
    enc = M.ResemblyzerEncoder()
    e = enc.embed([clip, clip.copy()])
    assert M.cosine(e[0], e[1]) == pytest.approx(1.0, abs=1e-5)
    assert "resemblyzer" in enc.name


def test_noise_lowers_stoi_pesq_visqol(clip):
    noisy = _noisy(clip, 5.0)
    assert M.stoi_score(clip, noisy) < M.stoi_score(clip, clip) - 0.05
    assert M.pesq_wb(clip, noisy) < M.pesq_wb(clip, clip) - 1.0
    v = M.VisqolSpeech()
    assert v(clip, noisy) < v(clip, clip)
    assert "speech mode" in v.name


def test_scores_length_mismatch_is_cut(clip):
    assert M.stoi_score(clip, np.concatenate([clip, np.zeros(500, np.float32)])) == pytest.approx(1.0, abs=1e-6)


def test_dnsmos_prefers_clean(clip):
    mos = M.DnsMos()
    assert 1.0 <= mos(_noisy(clip, 0.0)) < mos(clip) <= 5.0
    assert "DNSMOS" in mos.name


def test_wavlm_from_local_dir_and_missing_dirs(tmp_path, clip):
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMForXVector

    cfg = WavLMConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                      conv_dim=(16, 16), conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=16,
                      num_conv_pos_embedding_groups=2, tdnn_dim=(16, 16), tdnn_kernel=(3, 1),
                      tdnn_dilation=(1, 1), xvector_output_dim=8, num_buckets=32, max_bucket_distance=64)
    WavLMForXVector(cfg).save_pretrained(tmp_path / "wavlm")
    Wav2Vec2FeatureExtractor(sampling_rate=SR, do_normalize=True).save_pretrained(tmp_path / "wavlm")
    enc = M.load_speaker_encoder(f"wavlm:{tmp_path / 'wavlm'}")
    e = enc.embed([clip[:SR], clip[:SR].copy()])
    assert e.shape == (2, 8) and M.cosine(e[0], e[1]) == pytest.approx(1.0, abs=1e-5)

    with pytest.raises(DmttsError, match="wavlm:DIR.*resemblyzer"):
        M.load_speaker_encoder(f"wavlm:{tmp_path / 'nope'}")
    with pytest.raises(DmttsError, match="faster-whisper.*hf-whisper:DIR.*hf-ctc:DIR"):
        M.load_transcriber(f"hf-ctc:{tmp_path / 'nope'}")
    with pytest.raises(DmttsError, match="TorchScript.*dnsmos"):
        M.load_mos(f"utmos:{tmp_path / 'nope'}")
    with pytest.raises(DmttsError, match="needs a model dir"):
        M.load_transcriber("hf-whisper")


# ---------------------------------------------------------------------------------------- significance

def test_aso_clear_dominance_and_identical():
    rng = np.random.default_rng(1)
    good, bad = rng.normal(5.0, 0.3, 300), rng.normal(3.0, 0.3, 300)
    assert aso_epsilon(good, bad, num_bootstrap=300) == pytest.approx(0.0, abs=1e-9)
    assert aso_epsilon(bad, good, num_bootstrap=300) == pytest.approx(1.0, abs=1e-9)
    same_a, same_b = rng.normal(4.0, 0.5, 300), rng.normal(4.0, 0.5, 300)
    assert aso_epsilon(same_a, same_b, num_bootstrap=300) > 0.5
    assert aso_epsilon(same_a, same_a.copy(), num_bootstrap=300) >= 0.5
    # A small shift with heavy overlap: almost (not strict) dominance.
    shifted = rng.normal(4.3, 0.5, 300)
    eps = aso_epsilon(shifted, same_a, num_bootstrap=300)
    assert 0.0 < eps < 0.5


def test_compare_systems_table_and_direction(tmp_path):
    from dmtts.eval.scores import write_scores_csv
    from dmtts.eval.significance import significance_from_files

    rng = np.random.default_rng(2)
    wers = {"A": rng.normal(3.0, 0.5, 200), "B": rng.normal(8.0, 0.5, 200), "C": rng.normal(8.0, 0.5, 200)}
    paths = []
    for name, vals in wers.items():
        rows = [{"utt_id": f"u{i}", "wer": v, "stoi": 1.0 - v / 100} for i, v in enumerate(vals)]
        paths.append(write_scores_csv(tmp_path / f"scores_{name}.csv", rows))
    res = significance_from_files(paths, "wer", tmp_path / "sig", num_bootstrap=200)
    assert res.lower_is_better and res.alpha_corrected == pytest.approx(0.05 / 3)
    assert res.symbol("A", "B") == DOMINANT and res.symbol("A", "C") == DOMINANT
    assert res.symbol("B", "A") == NONE and res.symbol("B", "C") == NONE and res.symbol("C", "B") == NONE
    md = (tmp_path / "sig" / "significance_wer.md").read_text()
    assert "| A |" in md and "★" in md and "τ = 0.5" in md
    # a system without scores for a metric (ground truth has no STOI) is left out of that table
    write_scores_csv(tmp_path / "scores_ground_truth.csv", [{"utt_id": "u0", "wer": 1.0}, {"utt_id": "u1", "wer": 2.0}])
    res = significance_from_files(paths + [tmp_path / "scores_ground_truth.csv"], "stoi", tmp_path / "sig",
                                  num_bootstrap=100)
    assert res.systems == ["A", "B", "C"] and res.symbol("A", "B") == DOMINANT
    res = compare_systems({"A": 1 - wers["A"] / 100, "B": 1 - wers["B"] / 100}, "stoi", num_bootstrap=100)
    assert res.symbol("A", "B") == DOMINANT  # stoi: higher is better
    assert BETTER != DOMINANT
    with pytest.raises(DmttsError):
        compare_systems({"A": [1.0, 2.0]}, "wer")


# ---------------------------------------------------------------------------------------- scores CSV

def test_scores_csv_roundtrip(tmp_path):
    from dmtts.eval.scores import read_scores_csv, system_name_from_path, write_scores_csv

    p = write_scores_csv(tmp_path / "scores_sys_nq8.csv", [{"utt_id": "u1", "wer": 12.5, "stoi": 0.9},
                                                           {"utt_id": "u2", "wer": math.nan}])
    with open(p) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["utt_id", "wer", "wil", "stoi", "pesq", "visqol", "sim", "sim_r", "mos_proxy", "comb"]
    assert rows[1] == ["u1", "12.5", "", "0.9", "", "", "", "", "", ""]
    back = read_scores_csv(p)
    assert back["u1"]["wer"] == 12.5 and math.isnan(back["u2"]["wer"]) and math.isnan(back["u1"]["pesq"])
    assert system_name_from_path(p) == "sys_nq8"


# ---------------------------------------------------------------------------------------- benchmarks

class FakeASR:
    """Returns the reference text for clean-ish audio and nonsense for very quiet audio."""

    name = "fake-asr"

    def __init__(self, texts):
        self.texts = texts  # list of (wav, text) to match by length

    def transcribe(self, wavs):
        out = []
        for w in wavs:
            text = min(self.texts, key=lambda t: abs(len(t[0]) - len(w)))[1]
            out.append(text if np.sqrt(np.mean(w ** 2)) > 1e-3 else "")
        return out


class FakeMos:
    name = "fake-mos"

    def __call__(self, wav):
        return float(np.clip(np.abs(wav).mean() * 50, 1, 5))


def _cuts(tmp_path, texts):
    from lhotse import CutSet, Recording, SupervisionSegment

    cuts, wavs = [], []
    for i, text in enumerate(texts):
        wav = _speech(tmp_path / f"utt{i}.wav", text, voice=["en-us", "en+f2"][i % 2])
        rec = Recording.from_file(tmp_path / f"utt{i}.wav", recording_id=f"utt{i}")
        sup = SupervisionSegment(f"utt{i}", f"utt{i}", 0.0, rec.duration, text=text, speaker=f"spk{i % 2}")
        cut = rec.to_cut()
        cut.supervisions = [sup]
        cuts.append(cut)
        wavs.append(wav)
    return CutSet.from_cuts(cuts), wavs


def test_codec_eval_cli_on_tiny_codec(tmp_path, monkeypatch):
    import dmtts.eval.metrics as metrics_mod
    from dmtts.cli import main

    codec_model = pytest.importorskip("dmtts.codec.model")
    from dmtts.codec.config import model_config

    texts = ["Hello world.", "Good morning to you."]
    cuts, wavs = _cuts(tmp_path, texts)
    cuts.to_file(tmp_path / "cuts.jsonl.gz")
    cfg = model_config("tiny")
    cfg.kmeans_init = False
    codec = codec_model.DMCodec(cfg)
    codec.save_pretrained(tmp_path / "exp" / "export")

    fake = FakeASR(list(zip(wavs, texts)))
    monkeypatch.setattr(metrics_mod, "load_transcriber", lambda spec, device="cpu": fake)
    monkeypatch.setattr(metrics_mod, "load_mos", lambda spec, device="cpu": FakeMos())
    other = tmp_path / "other"
    other.mkdir()
    sf.write(other / "utt0.wav", wavs[0], SR)  # a "perfect" baseline with one file missing
    rc = main(["eval", "codec", "--model", str(tmp_path / "exp" / "export"), "--cuts", str(tmp_path / "cuts.jsonl.gz"),
               "--n-q", "1", "2", "--systems", f"copy={other}", "--metrics", "wer", "wil", "stoi", "sim", "mos_proxy",
               "comb", "--device", "cpu", "--figure-utts", "2"])
    assert rc == 0
    out = tmp_path / "exp" / "eval"
    names = sorted(p.name for p in out.glob("scores_*.csv"))
    assert names == ["scores_copy.csv", "scores_dmcodec_nq1.csv", "scores_dmcodec_nq2.csv", "scores_ground_truth.csv"]
    with open(out / "scores_dmcodec_nq2.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["utt_id"] for r in sorted(rows, key=lambda r: r["utt_id"])] == ["utt0", "utt1"]
    assert all(r["pesq"] == "" and r["stoi"] != "" for r in rows)
    summary = list(csv.DictReader(open(out / "summary.csv")))
    by = {r["system"]: r for r in summary}
    assert float(by["ground_truth"]["wer"]) == 0.0 and by["ground_truth"]["stoi"] == ""
    assert float(by["copy"]["stoi"]) == pytest.approx(1.0, abs=1e-3) and by["copy"]["n"] == "1"
    assert float(by["copy"]["sim"]) == pytest.approx(1.0, abs=1e-3)
    # the comb needs no reference: the originals get it too, and an exact copy scores the same
    gt_comb = {r["utt_id"]: r["comb"] for r in csv.DictReader(open(out / "scores_ground_truth.csv"))}
    copy_comb = {r["utt_id"]: r["comb"] for r in csv.DictReader(open(out / "scores_copy.csv"))}
    assert copy_comb["utt0"] == gt_comb["utt0"] != ""
    assert "comb dB" in (out / "summary.md").read_text()
    assert by["dmcodec_nq2"]["bitrate_kbps"] == "0.7"  # 50 Hz x log2(128) bits x 2 levels
    md = (out / "summary.md").read_text()
    assert "fake-asr" in md and "resemblyzer" in md and "fake-mos" in md
    assert (out / "mel_spectrograms.png").stat().st_size > 1000
    assert len(list((out / "recon" / "dmcodec_nq1").glob("*.wav"))) == 2

    # the report stage reads the summary back
    rc = main(["eval", "report", "--codec-eval", str(out), "--out", str(tmp_path / "report.md")])
    assert rc == 0 and "Codec reconstruction" in (tmp_path / "report.md").read_text()
    from dmtts.eval.report import write_report

    # several evaluations (e.g. toy and pretrained models) get a section each; curves are listed
    fig = out / "mel_spectrograms.png"
    rc = main(["eval", "report", "--codec-eval", str(out), str(out), "--tts-eval", str(out),
               "--figures", str(fig), "--out", str(tmp_path / "report2.md")])
    text = (tmp_path / "report2.md").read_text()
    assert rc == 0 and text.count(f"## Codec: {out}") == 2 and f"## TTS: {out}" in text
    assert "## Training curves" in text and str(fig.resolve()) in text
    with pytest.raises(DmttsError, match="--figures"):
        write_report(tmp_path / "r3.md", codec_eval=out, figures=[tmp_path / "nope.png"], echo=False)


def test_tts_eval_averages_repetitions(tmp_path, monkeypatch):
    from lhotse import CutSet

    from dmtts.eval.metrics import EvalModels
    from dmtts.eval.tts_eval import evaluate_tts

    texts = ["Hello world.", "Good morning to you."]
    cuts, wavs = _cuts(tmp_path, texts)
    pairs = []
    for i, cut in enumerate(cuts):  # prompt = the other utterance's first second
        prompt = cuts[1 - i]
        cut.custom = {"prompt_cut_id": prompt.id, "prompt_start": 0.0, "prompt_duration": 1.0,
                      "prompt_recording": prompt.recording.to_dict(), "prompt_text": texts[1 - i],
                      "target_text": texts[i]}
        pairs.append(cut)
    CutSet.from_cuts(pairs).to_file(tmp_path / "pairs.jsonl.gz")
    synth = tmp_path / "synth"
    synth.mkdir()
    sf.write(synth / "utt0_rep0.wav", wavs[0], SR)
    sf.write(synth / "utt0_rep1.wav", np.zeros_like(wavs[0]), SR)  # silent -> fake ASR says ""
    sf.write(synth / "utt1.wav", wavs[1], SR)

    calls = []

    class CountingASR(FakeASR):
        def transcribe(self, wavs_):
            calls.append(len(wavs_))
            return super().transcribe(wavs_)

    models = EvalModels(asr=CountingASR(list(zip(wavs, texts))), mos=FakeMos())
    res = evaluate_tts(synth, tmp_path / "pairs.jsonl.gz", tmp_path / "eval", models=models,
                       metrics=["wer", "wil", "mos_proxy"])
    rows = {r["utt_id"]: r for r in csv.DictReader(open(res["scores"]["dmcodec_tts"]))}
    assert float(rows["utt0"]["wer"]) == pytest.approx(50.0)  # mean of 0 % and 100 %
    assert float(rows["utt1"]["wer"]) == 0.0 and rows["utt1"]["stoi"] == ""
    summary = {r["system"]: r for r in csv.DictReader(open(res["summary_csv"]))}
    assert summary["dmcodec_tts"]["reps"] == "1-2" and float(summary["ground_truth"]["wer"]) == 0.0
    # pooled: utt0 (2 words) averages 0 and 2 deletions -> 1 error; utt1 (4 words) none: 1 / 6
    assert float(summary["dmcodec_tts"]["wer"]) == pytest.approx(100 / 6, abs=1e-3)


def test_tts_pairs_need_prompt_fields(tmp_path):
    from dmtts.eval.tts_eval import load_pairs

    cuts, _ = _cuts(tmp_path, ["Hello world."])
    cuts.to_file(tmp_path / "bad.jsonl.gz")
    with pytest.raises(DmttsError, match="prompt_start.*dmtts subset"):
        load_pairs(tmp_path / "bad.jsonl.gz")


@pytest.mark.skipif(not HAVE_ESPEAK, reason="needs espeak-ng")
def test_real_whisper_tiny_on_espeak(clip):
    try:
        asr = M.load_transcriber("faster-whisper")
    except DmttsError as e:
        pytest.skip(f"Whisper tiny.en not available: {e}")
    hyp = asr.transcribe([clip])[0]
    assert "tiny.en" in asr.name
    assert M.word_errors(STELLA, hyp).wer <= 25.0, hyp


def test_train_curves_overlay_runs_from_tensorboard(tmp_path, capsys):
    from torch.utils.tensorboard import SummaryWriter

    from dmtts.cli import main

    for name, scale in (("a", 1.0), ("b", 2.0)):
        writer = SummaryWriter(str(tmp_path / name / "tensorboard"))
        for step in (10, 20, 30):
            writer.add_scalar("train/mel", scale * step, step)
            if name == "b":
                writer.add_scalar("train/distill_lm", 0.5, step)
        writer.close()
    out = tmp_path / "curves"
    # a run name with a comma (as in "lr 1e-3 (9,357 steps)") stays one CSV field
    assert main(["eval", "train-curves", "--runs", f"a={tmp_path / 'a'}", f"b (3,000 steps)={tmp_path / 'b'}",
                 "--tags", "train/mel", "train/distill_lm", "--output-dir", str(out)]) == 0
    rows = list(csv.reader((out / "train_curves.csv").open()))
    assert rows[0] == ["step", "a:train/mel", "b (3,000 steps):train/mel",
                       "b (3,000 steps):train/distill_lm"]   # a never logged distill_lm
    assert rows[1:] == [["10", "10", "20", "0.5"], ["20", "20", "40", "0.5"], ["30", "30", "60", "0.5"]]
    assert (out / "train_curves.png").stat().st_size > 0
    assert main(["eval", "train-curves", "--runs", f"a={tmp_path}", "--output-dir", str(out)]) == 2
    assert "no tensorboard/ directory" in capsys.readouterr().err
