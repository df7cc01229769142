"""Tokenize round trip, and the synthesize CLI on tiny random models (single + pairs mode)."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from dmtts.cli import main
from synthesis_fixtures import make_tiny_tts_models


@pytest.fixture(autouse=True)
def _one_intra_op_thread():
    """Earlier tests can leave torch with more intra-op threads (training code sets its own
    number); on a busy 2-core machine that makes every op several times slower and changes float
    rounding (the torchrun ranks run with one thread)."""
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A random tiny codec + random tiny AR/NAR models exported like training does."""
    return make_tiny_tts_models(tmp_path_factory.mktemp("tts_models"))


def _args(m, *extra):
    return ["synthesize", "--ar", str(m["ar"]), "--nar", str(m["nar"]), "--codec", str(m["codec"]), *extra]


def test_synthesize_single_writes_16k_wav(models, tmp_path):
    out = tmp_path / "o.wav"
    text = "Hello world, this is a test."
    rc = main(_args(models, "--text", text, "--prompt-audio", str(models["prompt"]),
                    "--prompt-text", "The quick brown fox.", "--out", str(out), "--seed", "1"))
    assert rc == 0
    wav, sr = sf.read(out)
    assert sr == 16000 and wav.ndim == 1
    from dmtts.text.phonemizer import Phonemizer

    n_target = len(Phonemizer("en-us").phonemize(text))
    # random model: at least one frame, at most max_len_ratio (4) frames per target symbol
    assert 320 <= len(wav) <= 4 * n_target * 320
    assert np.isfinite(wav).all()
    # same seed -> same audio
    out2 = tmp_path / "o2.wav"
    main(_args(models, "--text", text, "--prompt-audio", str(models["prompt"]),
               "--prompt-text", "The quick brown fox.", "--out", str(out2), "--seed", "1"))
    assert np.array_equal(sf.read(out2)[0], wav)
    # weight-only fp16 linear layers (faster decoding) also work
    out3 = tmp_path / "o3.wav"
    assert main(_args(models, "--text", text, "--prompt-audio", str(models["prompt"]),
                      "--prompt-text", "The quick brown fox.", "--out", str(out3), "--dtype", "float16")) == 0
    assert sf.info(str(out3)).samplerate == 16000


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--text", "  ", "--prompt-text", "hi there"], "empty"),
        (["--text", "Hello.", "--prompt-audio", "/nonexistent/p.wav", "--prompt-text", "hi"], "does not exist"),
        (["--text", "Hello.", "--prompt-audio", "SHORT", "--prompt-text", "hi"], "at least 1 s"),
        (["--text", "Привет мир", "--prompt-text", "hello there"], "non-Latin"),
        (["--text", "Hello.", "--asr", "none"], "--prompt-text"),
    ],
)
def test_synthesize_bad_inputs(models, tmp_path, capsys, extra, message):
    if "--prompt-audio" not in extra:
        extra = [*extra, "--prompt-audio", str(models["prompt"])]
    extra = [str(models["short"]) if e == "SHORT" else e for e in extra]
    rc = main(_args(models, *extra, "--out", str(tmp_path / "x.wav")))
    err = capsys.readouterr().err
    assert rc == 2 and message in err, err
    assert "Traceback" not in err and not (tmp_path / "x.wav").exists()


def test_synthesize_pairs_with_repeats(models, tmp_path):
    from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

    rec = Recording.from_file(models["prompt"])
    cuts = []
    for i, text in enumerate(["Hello world.", "This is a test."]):
        cuts.append(MonoCut(
            id=f"tgt{i}", start=0, duration=rec.duration, channel=0, recording=rec,
            supervisions=[SupervisionSegment(id=f"tgt{i}", recording_id=rec.id, start=0, duration=rec.duration,
                                             text=text, speaker="s1")],
            custom={"prompt_cut_id": "p", "prompt_start": 0.5, "prompt_offset": 0.5, "prompt_duration": 1.5,
                    "prompt_recording": rec.to_dict(), "prompt_text": "The quick brown fox.", "target_text": text},
        ))
    pairs = tmp_path / "pairs.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(pairs)
    out_dir = tmp_path / "synth"
    rc = main(_args(models, "--pairs", str(pairs), "--output-dir", str(out_dir), "--repeats", "2", "--batch-size", "3"))
    assert rc == 0
    names = sorted(p.name for p in out_dir.glob("*.wav"))
    assert names == ["tgt0_rep0.wav", "tgt0_rep1.wav", "tgt1_rep0.wav", "tgt1_rep1.wav"]
    records = [json.loads(line) for line in (out_dir / "manifest.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == ["tgt0_rep0", "tgt0_rep1", "tgt1_rep0", "tgt1_rep1"]
    assert all(r["duration"] > 0 and sf.info(r["path"]).samplerate == 16000 for r in records)


def test_tokenize_round_trip_resume_and_failures(models, tmp_path, caplog):
    from lhotse import CutSet, Recording, RecordingSet

    from dmtts.codec.model import DMCodec
    from dmtts.data.codes import load_codes

    rng = np.random.default_rng(0)
    recs = []
    for i, seconds in enumerate([0.7, 1.0, 1.0, 0.5]):
        p = tmp_path / f"w{i}.wav"
        sf.write(p, (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32), 16000)
        recs.append(Recording.from_file(p))
    cuts = CutSet.from_manifests(recordings=RecordingSet.from_recordings(recs)).modify_ids(lambda i: i.split("-")[0])
    cuts_path = tmp_path / "in_cuts.jsonl.gz"
    cuts.to_file(cuts_path)
    (tmp_path / "w3.wav").unlink()  # this cut cannot be read: reported and skipped
    out_dir = tmp_path / "tok"
    assert main(["tokenize", "--codec", str(models["codec"]), "--cuts", str(cuts_path), "--output-dir", str(out_dir),
                 "--batch-duration", "2.0", "--device", "cpu"]) == 0
    out = CutSet.from_file(out_dir / "in_cuts.jsonl.gz").to_eager()
    assert sorted(c.id for c in out) == ["w0", "w1", "w2"]
    assert "w3" in (out_dir / "in_cuts_failed.txt").read_text()
    codec = DMCodec.from_pretrained(models["codec"])
    for c in out:
        stored = load_codes(c)
        assert stored.dtype == np.int16 and stored.shape[1] == 8
        assert c.codes.frame_shift == 0.02
        wav = torch.from_numpy(c.load_audio()).float()[None]
        with torch.inference_mode():
            ref = codec.encode(wav).numpy()[0].T
        assert stored.shape[0] == ref.shape[0] == round(c.duration / 0.02)
        np.testing.assert_array_equal(stored, ref)  # batched without padding: exactly codec.encode
    # resume: nothing is re-encoded, the manifest is the same
    caplog.set_level("INFO")
    from dmtts.tts.tokenize import tokenize_cuts

    tokenize_cuts(codec, cuts_path, out_dir, chunk_size=2, progress=False)  # streamed in chunks of 2
    assert "3 cuts already tokenized" in caplog.text and "tokenized 3 of 4 cuts" in caplog.text
    again = CutSet.from_file(out_dir / "in_cuts.jsonl.gz").to_eager()
    assert [c.id for c in again] == [c.id for c in out]
    for a, b in zip(again, out):
        np.testing.assert_array_equal(load_codes(a), load_codes(b))


def test_zero_shot_text_has_a_word_boundary_between_prompt_and_target(models):
    """Regression: the prompt transcript and the target text were joined without the word
    boundary that training puts between every two words. The AR must see exactly the symbols of
    the whole utterance 'prompt text + target text', as phonemized for training."""
    from dmtts.tts.synthesize import SynthesisItem, Synthesizer

    synth = Synthesizer(models["ar"], models["nar"], models["codec"])
    seen = {}
    real_generate = synth.ar.generate

    def spy(text, text_lens, *args, **kwargs):
        seen["text"], seen["lens"] = text.clone(), text_lens.clone()
        return real_generate(text, text_lens, *args, **kwargs)

    synth.ar.generate = spy
    prompt_text, target = "Hello world, this is", "a test."
    wav = np.zeros(16000, dtype=np.float32)
    synth.synthesize([SynthesisItem(target, wav, prompt_text)], generator=torch.Generator().manual_seed(0))
    whole = synth.text.text_symbols(prompt_text + " " + target)
    assert "_" in whole
    expected, lens = synth.text.collate([whole])
    assert int(seen["lens"][0]) == int(lens[0])
    assert torch.equal(seen["text"][0, : int(lens[0])], expected[0, : int(lens[0])])


def test_tokenize_batched_codes_equal_one_cut_at_a_time(models, tmp_path):
    """Regression: tokenization encoded zero-padded batches, so the BiLSTM's backward pass and the
    convolutions saw padding, and codes near the end of shorter cuts differed from encoding each
    cut alone (as a synthesis prompt is encoded). Batched tokenization must be exact."""
    from lhotse import CutSet, Recording, RecordingSet

    from dmtts.codec.model import DMCodec
    from dmtts.data.codes import load_codes
    from dmtts.tts.tokenize import tokenize_cuts

    codec = DMCodec.from_pretrained(models["codec"])
    rng = np.random.default_rng(3)
    recs = []
    for i, seconds in enumerate([0.43, 2.37, 1.0, 0.81, 1.66]):  # lengths that force padding
        t = np.arange(int(seconds * 16000)) / 16000
        wav = 0.2 * np.sin(2 * np.pi * (150 + 40 * i) * t) + 0.05 * rng.standard_normal(len(t))
        p = tmp_path / f"u{i}.wav"
        sf.write(p, wav.astype(np.float32), 16000)
        recs.append(Recording.from_file(p))
    cuts = CutSet.from_manifests(recordings=RecordingSet.from_recordings(recs)).modify_ids(lambda i: i.split("-")[0])
    cuts_path = tmp_path / "cuts.jsonl.gz"
    cuts.to_file(cuts_path)
    # codebooks from k-means on these latents (a fresh model's are all zero: every code 0)
    torch.manual_seed(0)
    codec.train()
    with torch.no_grad():
        codec(torch.from_numpy(np.concatenate([c.load_audio()[0] for c in cuts])).float()[None, None])
    codec.eval()
    batched = tokenize_cuts(codec, cuts_path, tmp_path / "batched", batch_duration=100.0, progress=False)
    single = tokenize_cuts(codec, cuts_path, tmp_path / "single", batch_duration=0.01, progress=False)
    b = {c.id: load_codes(c) for c in CutSet.from_file(batched)}
    s = {c.id: load_codes(c) for c in CutSet.from_file(single)}
    assert sorted(b) == sorted(s) == [f"u{i}" for i in range(5)]
    for cid in b:
        np.testing.assert_array_equal(b[cid], s[cid])
        c = next(c for c in CutSet.from_file(cuts_path) if c.id == cid)
        with torch.inference_mode():
            alone = codec.encode(torch.from_numpy(c.load_audio()).float()[None]).numpy()[0].T
        np.testing.assert_array_equal(b[cid], alone)
    assert len(np.unique(np.concatenate(list(b.values())))) > 8  # real codes, not a constant


def _codec_with_random_codebooks():
    """The tiny preset's codebooks start at zero (k-means fills them on the first batch): give
    them values so that every level changes the latent."""
    from dmtts.codec.model import DMCodec

    torch.manual_seed(0)
    codec = DMCodec.from_preset("tiny").eval()
    for layer in codec.quantizer.layers:
        layer.embed.copy_(torch.randn_like(layer.embed))
        layer.inited.fill_(1.0)
    return codec


def test_expected_latent_of_one_hot_probabilities_is_the_codes_latent():
    """DMCodec.decode_expected: one-hot distributions decode exactly as their codes; a uniform
    level adds that codebook's mean vector (hand computation)."""
    codec = _codec_with_random_codebooks()
    V, K, T = codec.config.codebook_size, codec.config.n_q, 7
    codes = torch.randint(0, V, (1, K, T))
    probs = torch.nn.functional.one_hot(codes, V).float()  # [1, K, T, V]
    rvq = codec.quantizer
    assert torch.allclose(rvq.decode_expected(probs), rvq.decode(codes), atol=1e-6)
    with torch.inference_mode():
        assert torch.allclose(codec.decode_expected(probs), codec.decode(codes), atol=1e-5)
    probs[:, 1] = 1.0 / V
    want = rvq.layers[0].embed[codes[0, 0]].T[None] + rvq.layers[1].embed.mean(0)[None, :, None] + \
        sum(rvq.layers[k].embed[codes[0, k]].T[None] for k in range(2, K))
    assert torch.allclose(rvq.decode_expected(probs), want, atol=1e-5)


def test_nar_decoding_expected(models, tmp_path, capsys):
    """--nar-decoding expected: the NAR's greedy codes are its distributions' argmax, level 1 is
    the AR's; the synthesis has the argmax run's length; with --stream it is a clear error."""
    from dmtts.tts.synthesize import SynthesisItem, Synthesizer

    codec_dir = tmp_path / "codec"
    _codec_with_random_codebooks().save_pretrained(codec_dir)
    models = {**models, "codec": codec_dir}
    synth = Synthesizer(models["ar"], models["nar"], codec_dir, nar_decoding="expected")
    text, text_lens, codes, prompt_lens, *_ = synth.prepare(
        [SynthesisItem("Hello world.", np.zeros(16000, np.float32), "The quick brown fox.")])
    l1 = torch.randint(0, synth.nar.cfg.codebook_size, (1, 9))
    (got_codes, probs), = synth.nar.generate(text, text_lens, codes, prompt_lens, l1, torch.tensor([9]), return_probs=True)
    plain, = synth.nar.generate(text, text_lens, codes, prompt_lens, l1, torch.tensor([9]))
    assert torch.equal(got_codes, plain) and torch.equal(got_codes[:, 0], l1[0])
    assert torch.equal(probs.argmax(-1), plain) and torch.allclose(probs.sum(-1), torch.ones(9, synth.n_q))
    outs = {}
    for mode in ("argmax", "expected"):
        out = tmp_path / f"{mode}.wav"
        assert main(_args(models, "--text", "Hello world.", "--prompt-audio", str(models["prompt"]), "--prompt-text",
                          "The quick brown fox.", "--out", str(out), "--seed", "3", "--nar-decoding", mode)) == 0
        outs[mode] = sf.read(out)[0]
    assert len(outs["expected"]) == len(outs["argmax"]) and np.isfinite(outs["expected"]).all()
    assert not np.array_equal(outs["expected"], outs["argmax"])
    rc = main(_args(models, "--text", "Hello.", "--prompt-audio", str(models["prompt"]), "--prompt-text", "hi there",
                    "--out", str(tmp_path / "s.wav"), "--stream", "--nar-decoding", "expected"))
    assert rc == 2 and "does not stream" in capsys.readouterr().err
