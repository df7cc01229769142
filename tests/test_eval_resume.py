"""Evaluation scoring is resumable (per-utterance score cache: a rerun scores only what is
missing) and sharded over ranks (the merged outputs equal one process's, whatever the world
size), for ``eval codec`` and ``eval tts``; plus the real thing under ``torchrun`` (2 gloo ranks)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dmtts.data.sharding import ShardContext
from dmtts.eval import codec_eval
from dmtts.eval.codec_eval import evaluate_codec
from dmtts.eval.metrics import EvalModels
from dmtts.eval.tts_eval import evaluate_tts

SR = 16000
REPO = Path(__file__).resolve().parents[1]
TEXTS = ["the colour grey", "hello world", "good morning to you all", "rock and roll", "one more time", "fine"]


def _wav(i: int) -> np.ndarray:
    """A distinct 0.5-1.0 s harmonic tone per index (lengths differ: batches get padded)."""
    t = np.arange(int(SR * (0.5 + 0.1 * i))) / SR
    f0 = 110 + 25 * i
    wav = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t))
    return (0.2 * wav).astype(np.float32)


def _cuts(tmp_path: Path, n: int = 5) -> Path:
    from lhotse import CutSet, Recording, SupervisionSegment

    cuts = []
    for i in range(n):
        path = tmp_path / "audio" / f"utt{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, _wav(i), SR)
        rec = Recording.from_file(path, recording_id=f"utt{i}")
        cut = rec.to_cut()
        cut.supervisions = [SupervisionSegment(f"utt{i}", f"utt{i}", 0.0, rec.duration, text=TEXTS[i])]
        cuts.append(cut)
    CutSet.from_cuts(cuts).to_file(tmp_path / "cuts.jsonl.gz")
    return tmp_path / "cuts.jsonl.gz"


class Calls(dict):
    def add(self, what: str, n: int = 1) -> None:
        self[what] = self.get(what, 0) + n


class FakeASR:
    """Transcript chosen by the audio's length (reconstructions keep it): British spelling, which
    Whisper's normaliser maps to the American references, and one word dropped for utt3."""

    name = "fake-asr"

    def __init__(self, calls: Calls):
        self.calls = calls
        self.by_len = {len(_wav(i)): TEXTS[i].replace("colour grey", "color gray").replace("rock and", "rock &")
                       for i in range(len(TEXTS))}

    def transcribe(self, wavs):
        self.calls.add("asr", len(wavs))
        return [self.by_len.get(len(w), "") for w in wavs]


class FakeSpeaker:
    name = "fake-speaker"

    def __init__(self, calls: Calls):
        self.calls = calls

    def embed(self, wavs):
        self.calls.add("embed", len(wavs))
        return np.stack([[np.sqrt(np.mean(w ** 2)), np.mean(np.abs(np.diff(w))), np.std(w) + 1.0] for w in wavs])


class FakeMos:
    name = "fake-mos"

    def __init__(self, calls: Calls):
        self.calls = calls

    def __call__(self, wav):
        self.calls.add("mos")
        return float(1.0 + 40 * np.mean(np.abs(wav)))


def _models(calls: Calls, text_norm: str = "whisper") -> EvalModels:
    return EvalModels(asr=FakeASR(calls), sim=FakeSpeaker(calls), mos=FakeMos(calls), text_norm=text_norm)


@pytest.fixture(scope="module")
def codec():
    import torch

    from dmtts.codec.config import model_config
    from dmtts.codec.model import DMCodec

    torch.manual_seed(0)
    cfg = model_config("tiny")
    cfg.kmeans_init = False
    return DMCodec(cfg).eval()


@pytest.fixture
def count_reconstructions(monkeypatch):
    calls = Calls()
    real = codec_eval.reconstruct

    def counting(codec, utts, n_q, batch_size=8, device="cpu"):
        calls.add("reconstructed", len(utts))
        return real(codec, utts, n_q, batch_size, device)

    monkeypatch.setattr(codec_eval, "reconstruct", counting)
    return calls


def _outputs(out_dir: Path) -> dict[str, str]:
    """Every merged output that must not depend on the world size (timing and figures aside)."""
    names = sorted(p.name for p in out_dir.glob("scores_*.csv")) + sorted(p.name for p in out_dir.glob("transcripts_*"))
    return {n: (out_dir / n).read_text() for n in names + ["summary.csv", "summary.md", "models.json"]}


CODEC_METRICS = ["wer", "wil", "stoi", "sim", "mos_proxy"]


def _codec_eval(cuts, out, codec, calls, **kw):
    kw.setdefault("metrics", CODEC_METRICS)
    return evaluate_codec(cuts, out, codec=codec, n_qs=[2], models=kw.pop("models", None) or _models(calls),
                          n_figure=0, unit_size=2, batch_size=2, **kw)


def test_codec_eval_rerun_scores_only_what_is_missing(tmp_path, codec, count_reconstructions):
    cuts = _cuts(tmp_path)
    out = tmp_path / "eval"
    calls = Calls()
    _codec_eval(cuts, out, codec, calls)
    # 5 cuts x (ground truth + nq2) transcripts; sim embeds 5 references + 5 reconstructions
    assert calls == {"asr": 10, "embed": 10, "mos": 10} and count_reconstructions == {"reconstructed": 5}
    first = _outputs(out)
    rows = {r["utt_id"]: r for r in csv.DictReader(open(out / "scores_ground_truth.csv"))}
    assert list(rows) == [f"utt{i}" for i in range(5)]  # the original cut order
    assert float(rows["utt0"]["wer"]) == 0.0  # "colour grey" vs "color grey": Whisper's normaliser
    assert float(rows["utt3"]["wer"]) == pytest.approx(100 / 3, abs=1e-3)  # "&" is dropped by Whisper's normaliser
    summary = {r["system"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    gt = summary["ground_truth"]
    # corpus WER pools 1 error over 16 words; the utterance mean averages 0, 0, 0, 33.3, 0
    assert float(gt["wer"]) == pytest.approx(100 / 16, abs=1e-3)
    assert float(gt["wer_utt"]) == pytest.approx(100 / 15, abs=1e-3)
    assert "Whisper English normaliser (whisper-normalizer" in first["summary.md"]
    assert "WER utt-mean" in first["summary.md"]

    # a rerun: everything comes from the cache, nothing is transcribed, embedded or reconstructed
    calls.clear(), count_reconstructions.clear()
    _codec_eval(cuts, out, codec, calls)
    assert calls == {} and count_reconstructions == {} and _outputs(out) == first

    # a run killed after some units: unit 1 (cuts 2 and 3) of nq2 was never stored
    unit1 = list((out / "score_cache" / "dmcodec_nq2").glob("u000001-*.json"))
    assert len(unit1) == 1
    unit1[0].unlink()
    _codec_eval(cuts, out, codec, calls)
    assert calls == {"asr": 2, "embed": 4, "mos": 2} and count_reconstructions == {"reconstructed": 2}
    assert _outputs(out) == first

    # another metric: only it is computed (it needs the reconstructions, not the ASR)
    calls.clear(), count_reconstructions.clear()
    _codec_eval(cuts, out, codec, calls, metrics=CODEC_METRICS + ["pesq"])
    assert calls == {} and count_reconstructions == {"reconstructed": 5}

    # another text normaliser reuses the cached transcripts and names itself
    calls.clear(), count_reconstructions.clear()
    _codec_eval(cuts, out, codec, calls, models=_models(calls, "dmtts"))
    assert calls == {} and count_reconstructions == {}
    assert "dmtts.eval.wer_norm" in (out / "summary.md").read_text()
    # ... and another ASR is another key: everything is transcribed again, nothing else scored
    other = _models(calls)
    other._specs["asr"].name = "another-asr"
    _codec_eval(cuts, out, codec, calls, models=other)
    assert calls == {"asr": 10} and count_reconstructions == {"reconstructed": 5}

    # --rescore ignores the cache
    calls.clear()
    _codec_eval(cuts, out, codec, calls, rescore=True)
    assert calls == {"asr": 10, "embed": 10, "mos": 10}


@dataclass(frozen=True)
class SequentialRank(ShardContext):
    """A rank of a world whose ranks run one after the other in this process: the barrier is
    passed by running rank 0 last."""

    def barrier(self):
        pass

    def gather(self, obj):
        return [obj] if self.is_main else None


def _run_world(world_size: int, run, ranks=None):
    """Run ``run(ctx)`` for each rank (rank 0 last, after the others stored their scores)."""
    result = None
    for rank in ranks if ranks is not None else [*range(1, world_size), 0]:
        out = run(SequentialRank(rank=rank, world_size=world_size))
        assert (out is None) == (rank != 0)
        result = out or result
    return result


def test_codec_eval_sharded_equals_one_process_and_resumes_with_another_world_size(tmp_path, codec,
                                                                                   count_reconstructions):
    cuts = _cuts(tmp_path, 5)  # units of 2 cuts: 0-1, 2-3, 4
    calls = Calls()
    _codec_eval(cuts, tmp_path / "one", codec, calls)
    reference = _outputs(tmp_path / "one")

    calls.clear(), count_reconstructions.clear()
    _run_world(2, lambda ctx: _codec_eval(cuts, tmp_path / "two", codec, calls, ctx=ctx), ranks=[1])
    assert count_reconstructions == {"reconstructed": 2}  # rank 1 owns unit 1 only
    stored = sorted(p.name[:7] for p in (tmp_path / "two" / "score_cache" / "dmcodec_nq2").iterdir())
    assert stored == ["u000001"]
    _run_world(2, lambda ctx: _codec_eval(cuts, tmp_path / "two", codec, calls, ctx=ctx), ranks=[0])
    assert count_reconstructions == {"reconstructed": 5}
    assert _outputs(tmp_path / "two") == reference

    # a 3-rank run that only got rank 2's units done, resumed by one process: same outputs,
    # and the one process scores only the units rank 2 did not
    calls.clear(), count_reconstructions.clear()
    _run_world(3, lambda ctx: _codec_eval(cuts, tmp_path / "three", codec, calls, ctx=ctx), ranks=[2])
    assert count_reconstructions == {"reconstructed": 1}  # unit 2: cut 4
    _codec_eval(cuts, tmp_path / "three", codec, calls)
    assert count_reconstructions == {"reconstructed": 5}
    assert _outputs(tmp_path / "three") == reference


def _pairs(tmp_path: Path, n: int = 5) -> tuple[Path, Path]:
    """TTS pairs (prompt = the next utterance's first 0.4 s) and a synthesis dir (2 repetitions
    for even cuts, 1 file for odd ones; the last cut has none)."""
    from lhotse import CutSet, load_manifest

    cuts = list(load_manifest(_cuts(tmp_path, n)))
    pairs = []
    synth = tmp_path / "synth"
    synth.mkdir()
    for i, cut in enumerate(cuts):
        prompt = cuts[(i + 1) % n]
        cut.custom = {"prompt_cut_id": prompt.id, "prompt_start": 0.0, "prompt_duration": 0.4,
                      "prompt_recording": prompt.recording.to_dict(), "prompt_text": TEXTS[(i + 1) % n],
                      "target_text": TEXTS[i]}
        pairs.append(cut)
        if i == n - 1:
            continue
        for rep in (range(2) if i % 2 == 0 else [None]):
            name = f"{cut.id}_rep{rep}.wav" if rep is not None else f"{cut.id}.wav"
            sf.write(synth / name, _wav(i) * (0.5 if rep == 1 else 1.0), SR)
    CutSet.from_cuts(pairs).to_file(tmp_path / "pairs.jsonl.gz")
    return tmp_path / "pairs.jsonl.gz", synth


def test_tts_eval_sim_o_sim_r_cache_and_shards(tmp_path, codec):
    pairs, synth = _pairs(tmp_path)
    calls = Calls()

    def run(out, ctx=None, **kw):
        return evaluate_tts(synth, pairs, tmp_path / out, models=_models(calls), codec=codec, unit_size=2,
                            ctx=ctx, **kw)

    res = run("one")
    reference = _outputs(tmp_path / "one")
    # 6 synthesized files + 5 ground-truth recordings transcribed; embeddings: each file and
    # recording once, each of 5 prompts as is (SIM-o) and re-synthesized (SIM-r)
    assert calls == {"asr": 11, "embed": 21, "mos": 11}
    summary = {r["system"]: r for r in csv.DictReader(open(res["summary_csv"]))}
    sys_row = summary["dmcodec_tts"]
    assert sys_row["n"] == "4" and sys_row["reps"] == "1-2"
    sim_o, sim_r = float(sys_row["sim"]), float(sys_row["sim_r"])
    assert -1 <= sim_o <= 1 and -1 <= sim_r <= 1 and sim_o != sim_r
    md = (tmp_path / "one" / "summary.md").read_text()
    assert "SIM-o ↑" in md and "SIM-r ↑" in md and "re-synthesized through the codec" in md
    assert "WER utt-mean" in md and "whisper-normalizer" in md
    # SIM-r by hand for one file: the prompt through the codec, then the cosine of the embeddings
    from dmtts.data.subsets import load_prompt_audio
    from dmtts.eval.metrics import cosine
    from dmtts.eval.tts_eval import PromptResynthesizer
    from lhotse import load_manifest

    cut1 = list(load_manifest(pairs))[1]
    enc = FakeSpeaker(Calls())
    resynth = PromptResynthesizer(codec)(load_prompt_audio(cut1, SR))
    synth1 = sf.read(synth / "utt1.wav", dtype="float32")[0]
    rows = {r["utt_id"]: r for r in csv.DictReader(open(tmp_path / "one" / "scores_dmcodec_tts.csv"))}
    assert float(rows["utt1"]["sim_r"]) == pytest.approx(cosine(enc.embed([resynth])[0], enc.embed([synth1])[0]),
                                                         rel=1e-5)

    # rerun: nothing recomputed
    calls.clear()
    run("one")
    assert calls == {} and _outputs(tmp_path / "one") == reference

    # 2 ranks, one after the other: the same merged outputs
    _run_world(2, lambda ctx: run("two", ctx))
    assert _outputs(tmp_path / "two") == reference


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
       "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def test_eval_codec_under_torchrun_two_gloo_ranks_equals_one_process(tmp_path, codec):
    """``torchrun --nproc-per-node 2 -m dmtts.cli eval codec`` (gloo): the same merged scores, in
    the same order, as one process; each rank stored only its own units."""
    cuts = _cuts(tmp_path, 5)
    codec.save_pretrained(tmp_path / "export")
    args = ["-m", "dmtts.cli", "--log-level", "WARNING", "eval", "codec", "--model", str(tmp_path / "export"),
            "--cuts", str(cuts), "--n-q", "2", "--metrics", "stoi", "pesq", "--unit-size", "2", "--batch-size", "2",
            "--figure-utts", "0", "--device", "cpu", "--output-dir"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    r = subprocess.run([*launcher, *args, str(tmp_path / "two")], env=ENV, cwd=REPO, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    # one process (here, with the same single thread as each rank)
    evaluate_codec(cuts, tmp_path / "one", model_dir=tmp_path / "export", n_qs=[2], metrics=["stoi", "pesq"],
                   unit_size=2, batch_size=2, n_figure=0, device="cpu")
    assert _outputs(tmp_path / "two") == _outputs(tmp_path / "one")
    rows = list(csv.DictReader(open(tmp_path / "two" / "scores_dmcodec_nq2.csv")))
    assert [r["utt_id"] for r in rows] == [f"utt{i}" for i in range(5)] and all(r["stoi"] for r in rows)
    stored = sorted(p.name[:7] for p in (tmp_path / "two" / "score_cache" / "dmcodec_nq2").iterdir())
    assert stored == ["u000000", "u000001", "u000002"]  # rank 0: units 0 and 2, rank 1: unit 1
