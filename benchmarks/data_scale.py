#!/usr/bin/env python3
"""TTS training input at 10^5 and 10^6 cuts: a jsonl manifest (codes in HDF5) against Lhotse Shar.

For each corpus size it generates a synthetic tokenized corpus, tiny on disk, fast:

* cuts like Libri-Heavy's after ``dmtts tokenize`` + ``dmtts phonemize`` (durations 2-25 s,
  mean ~14 s; a ~200-character transcript with ~150 phonemes; a recording reference that is
  never read), with **random codes of 10 frames x 8 levels** per cut (not one per 20 ms: the
  loaders' costs measured here are per cut, and 10^6 real code arrays would be ~12 GB);
* the jsonl form: ``cuts.jsonl.gz`` with the codes in HDF5 files of 2,000 cuts each (the unit
  size of ``dmtts tokenize``);
* the Shar form: ``shar_index.json`` + shards of 250 cuts (cuts + codes tars), the layout
  ``dmtts shar export --fields tts --shard-size 250`` writes (every one of 256 ranks needs a
  shard: 400 shards at 10^5 cuts).

Then, per form and world size (64 and 256; the last rank, the one that waits longest), a fresh
process runs the real training data path (``dmtts.tts.train.load_cuts`` / ``make_sampler`` /
``make_loader`` with ``TTSDataset``, ``max_duration`` 280 s, 30 buckets, ``num_workers`` 0 so that
everything is measured in one process) and reports:

* ``first_batch_cpu_s`` (and ``first_batch_s``, wall): from nothing loaded to the first loaded
  batch of that rank;
* ``cuts_per_cpu_s``: cuts that reach this rank per CPU second of sampling, over ``--seconds`` CPU
  seconds after its first batch, epoch after epoch (the sampler alone, no data loading; for Shar
  it includes reading the codes tars, which is inseparable from its iteration), and its ratio to
  what one GPU consumes at the TTS step rate ``docs/scaling.md`` assumes (280 s of audio per
  0.025 s step ~ 800 cuts/s at 14 s per cut);
* ``peak_rss_mb`` of the process and ``open_fds`` (the most seen while loading the first
  ``LOADED_BATCHES`` batches).

Times are CPU seconds of the measuring process (wall seconds beside them): on a shared, loaded
machine a low-priority process may get a few per cent of a core, which wall times would measure
instead of the loader. Everything runs in that one process (``num_workers`` 0).

Figures are printed with ratios: Shar against jsonl in the same run, 10^6 against 10^5.

    nice -n 10 python benchmarks/data_scale.py --num-cuts 100000
    nice -n 10 python benchmarks/data_scale.py --num-cuts 1000000 --generate-only   # ~15 min, once
    nice -n 10 python benchmarks/data_scale.py --num-cuts 100000 1000000 --markdown
    # on a loaded machine: 10^6 as ten copies of the 10^5 corpus (ids repeat), built in seconds
    nice -n 10 python benchmarks/data_scale.py --num-cuts 100000 1000000 --replicate-from 100000 --markdown
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import random
import resource
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

PHONES = ["a", "b", "d", "e", "f", "g", "h", "i", "k", "l", "m", "n", "o", "p", "r", "s", "t", "u", "ˈa", "ˈe"]
WORDS = ["the", "of", "and", "to", "a", "in", "that", "he", "was", "it", "his", "her", "with", "as", "for"]
CODES_SHAPE = (10, 8)
H5_UNIT = 2000
ARRAYS_PER_UNIT = 50
LOADED_BATCHES = 5  # a rank of 256 samples 256 batches for each of its own: kept small
SHARD_SIZE = 250  # >= 4 shards per rank at 10^6 cuts on 256 ranks; >= 1 at 10^5
GPU_CUTS_PER_S = 280 / 0.025 / 14  # docs/scaling.md: 280 s batches at 0.025 s per AR step, 14 s cuts


def _text_pool(rng: random.Random, size: int = 1000) -> list[tuple[str, list[str]]]:
    """Transcripts and phoneme lists of Libri-Heavy-like length (drawn once, reused by index)."""
    pool = []
    for _ in range(size):
        words = [rng.choice(WORDS) for _ in range(rng.randint(30, 50))]
        pool.append((" ".join(words), [rng.choice(PHONES) for _ in range(int(len(words) * 3.5))]))
    return pool


def _cut(i: int, rng: random.Random, pool) -> dict:
    cid = f"b{i // 500:05d}-{i:08d}"
    dur = round(min(25.0, max(2.0, rng.gauss(14.0, 5.0))), 2)
    text, phones = pool[i % len(pool)]
    rid = f"rec-{cid}"
    return {"id": cid, "start": 0.0, "duration": dur, "channel": 0,
            "supervisions": [{"id": cid, "recording_id": rid, "start": 0.0, "duration": dur, "channel": 0,
                              "text": text, "speaker": f"spk{i % 5000}", "custom": {"phonemes": phones}}],
            "recording": {"id": rid, "sources": [{"type": "file", "channels": [0], "source": f"/corpus/{rid}.flac"}],
                          "sampling_rate": 16000, "num_samples": int(dur * 16000), "duration": dur,
                          "channel_ids": [0]},
            "type": "MonoCut"}


def _codes_manifest(storage_type: str, path: str = "", key: str = "") -> dict:
    return {"array": {"storage_type": storage_type, "storage_path": path, "storage_key": key,
                      "shape": list(CODES_SHAPE)}, "temporal_dim": 0, "frame_shift": 0.02, "start": 0.0}


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def generate(n: int, root: Path) -> dict:
    """Both forms of an ``n``-cut corpus under ``root`` (reused when already there).

    Speed: cut ``i`` gets code array ``i % ARRAYS_PER_UNIT`` of its 2,000-cut unit (so an HDF5
    unit file holds 50 arrays, not 2,000; a read costs the same), and the Shar tars are written
    member by member in the layout lhotse's ``ArrayTarWriter`` uses (``ID.npy`` + ``ID.json``).
    """
    import h5py

    from dmtts.data.shar import SHARDS_DIR, write_index
    from dmtts.text.symbols import SymbolTable

    done = root / "generated.json"
    if done.is_file():
        return json.loads(done.read_text())
    shar_dir = root / "shar" / SHARDS_DIR
    for d in (root / "h5", shar_dir):
        d.mkdir(parents=True, exist_ok=True)
    SymbolTable(PHONES).to_file(root / "symbols.txt")
    rng = random.Random(n)
    pool = _text_pool(rng)
    arrays = np.random.default_rng(n).integers(0, 1024, size=(ARRAYS_PER_UNIT, *CODES_SHAPE)).astype(np.int16)
    npys = []
    for a in arrays:
        buf = io.BytesIO()
        np.save(buf, a, allow_pickle=False)
        npys.append(buf.getvalue())
    placeholder = _codes_manifest("shar")
    placeholder_text = json.dumps(placeholder)
    placeholder_json = (placeholder_text + "\n").encode()
    t0 = time.time()
    shards, h5_path = [], ""
    shar_cuts = tar = None
    with gzip.open(root / "cuts.jsonl.gz", "wt", compresslevel=1) as jsonl:
        for i in range(n):
            if i % H5_UNIT == 0:
                h5_path = str(root / "h5" / f"codes.{i // H5_UNIT:06d}.h5")
                with h5py.File(h5_path, "w") as h5:
                    for k, a in enumerate(arrays):
                        h5.create_dataset(f"a{k}", data=a)
            if i % SHARD_SIZE == 0:
                if tar is not None:
                    shar_cuts.close()
                    tar.close()
                k = i // SHARD_SIZE
                shards.append({"cuts": f"{SHARDS_DIR}/cuts.{k:06d}.jsonl.gz", "codes": f"{SHARDS_DIR}/codes.{k:06d}.tar",
                               "num_cuts": min(SHARD_SIZE, n - i)})
                shar_cuts = gzip.open(root / "shar" / shards[-1]["cuts"], "wt", compresslevel=1)
                tar = tarfile.open(root / "shar" / shards[-1]["codes"], "w")
            body = json.dumps(_cut(i, rng, pool))[:-len(', "type": "MonoCut"}')]  # the type goes last
            key = i % ARRAYS_PER_UNIT
            codes = json.dumps(_codes_manifest("numpy_hdf5", h5_path, f"a{key}"))
            jsonl.write(f'{body}, "custom": {{"codes": {codes}}}, "type": "MonoCut"}}\n')
            shar_cuts.write(f'{body}, "custom": {{"codes": {placeholder_text}}}, "type": "MonoCut"}}\n')
            cut = {"id": body[8:body.index('"', 8)]}
            _tar_add(tar, f"{cut['id']}.npy", npys[key])
            _tar_add(tar, f"{cut['id']}.json", placeholder_json)
    shar_cuts.close()
    tar.close()
    write_index(root / "shar", shards, {"codes": "numpy"}, source="synthetic")
    info = {"num_cuts": n, "generate_s": round(time.time() - t0, 1),
            "jsonl_mb": round(sum(p.stat().st_size for p in [root / "cuts.jsonl.gz", *(root / "h5").iterdir()]) / 2**20, 1),
            "shar_mb": round(sum(p.stat().st_size for p in shar_dir.iterdir()) / 2**20, 1)}
    done.write_text(json.dumps(info))
    return info


def replicate(n: int, base: Path, root: Path) -> dict:
    """An ``n``-cut corpus made of copies of the one in ``base`` (no CPU spent on generation, for a
    loaded machine): the jsonl file repeated (gzip members concatenated; the codes stay in the base
    HDF5 files), the Shar shard files hard-linked under new names. Cut ids repeat across copies;
    neither the samplers nor the loaders look at ids."""
    import shutil

    from dmtts.data.shar import SHARDS_DIR, read_index, write_index

    done = root / "generated.json"
    if done.is_file():
        return json.loads(done.read_text())
    info = json.loads((base / "generated.json").read_text())
    copies, rest = divmod(n, info["num_cuts"])
    if rest or copies < 1:
        raise SystemExit(f"--replicate-from: {n} is not a multiple of {info['num_cuts']}")
    t0 = time.time()
    (root / "shar" / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    shutil.copy(base / "symbols.txt", root / "symbols.txt")
    with open(root / "cuts.jsonl.gz", "wb") as out:
        for _ in range(copies):
            with open(base / "cuts.jsonl.gz", "rb") as f:
                shutil.copyfileobj(f, out)
    shards = []
    for k in range(copies):
        for shard in read_index(base / "shar")["shards"]:
            entry = {"num_cuts": shard["num_cuts"]}
            for field in ("cuts", "codes"):
                name = Path(shard[field]).name.replace(".", f".copy{k:03d}-", 1)
                os.link(base / "shar" / shard[field], root / "shar" / SHARDS_DIR / name)
                entry[field] = f"{SHARDS_DIR}/{name}"
            shards.append(entry)
    write_index(root / "shar", shards, {"codes": "numpy"}, source=f"{copies} copies of {base}")
    info = {**info, "num_cuts": n, "generate_s": round(time.time() - t0, 1), "copies_of": str(base),
            "jsonl_mb": round(info["jsonl_mb"] * copies, 1), "shar_mb": round(info["shar_mb"] * copies, 1)}
    done.write_text(json.dumps(info))
    return info


class _CountCuts:
    """A dataset that loads nothing: the sampler alone (picklable)."""

    def __getitem__(self, cuts):
        return len(cuts)


def _num_cuts(root: Path) -> int:
    return json.loads((root / "generated.json").read_text())["num_cuts"]


def _sampled(form: str, cuts, dcfg, world_size: int, rank: int, seconds: float) -> tuple[int, float]:
    """Cuts the sampler gives this rank in ``seconds`` of CPU time after its first batch, epoch after
    epoch (one sampler, as ``dmtts tts train`` keeps), without loading their data; returns the
    cuts, the wall seconds and the CPU seconds."""
    from dmtts.tts.train import make_sampler

    n_cuts, t_start, c_start = 0, None, None
    sampler = make_sampler(cuts, dcfg, 0, world_size, rank)
    for epoch in range(1, 1000):
        sampler.set_epoch(epoch)
        if form == "shar":
            from dmtts.data.shar import shar_loader

            stream = shar_loader(_CountCuts(), sampler, 0, 0)
        else:
            stream = (len(b) for b in sampler)
        for n in stream:
            if t_start is None:  # the first batch waits for the buffer and bins: measured apart
                t_start, c_start = time.time(), time.process_time()
                continue
            n_cuts += n
            if time.process_time() - c_start >= seconds:
                break
        else:
            continue
        break
    return n_cuts, time.time() - t_start, time.process_time() - c_start


def measure(form: str, root: Path, world_size: int, rank: int, seconds: float, buffer_size: int = 20000) -> dict:
    """One form, one rank: first batch, sampler throughput, peak RSS, open descriptors."""
    t0 = time.time()
    from dmtts.data.open_files import open_descriptors
    from dmtts.data.tts_dataset import TTSDataset
    from dmtts.tts.config import TTSDataConfig
    from dmtts.tts.frontend import TTSText
    from dmtts.tts.train import _SkipFirst, load_cuts, make_loader, make_sampler

    t_import = time.time() - t0
    path = root / ("shar" if form == "shar" else "cuts.jsonl.gz")
    dcfg = TTSDataConfig(train_cuts=str(path), symbol_table=str(root / "symbols.txt"), max_duration=280.0,
                         num_buckets=30, num_workers=0, min_duration=0.5, max_cut_duration=30.0,
                         drop_last=False, buffer_size=buffer_size)
    t0, c0 = time.time(), time.process_time()
    cuts = load_cuts(str(path), dcfg, "training")
    sampler = make_sampler(cuts, dcfg, 0, world_size, rank)
    sampler.set_epoch(0)
    dataset = TTSDataset(TTSText.from_data_config(dcfg), n_q=8)
    batches = iter(make_loader(dataset, _SkipFirst(sampler, 0), 0, 0))
    first = next(batches)
    first_batch_s, first_batch_cpu_s = time.time() - t0, time.process_time() - c0
    fds = open_descriptors()
    for _ in range(LOADED_BATCHES - 1):
        if next(batches, None) is None:
            break
        fds = max(fds, open_descriptors())
    del batches
    n_cuts, elapsed, cpu = _sampled(form, cuts, dcfg, world_size, rank, seconds)
    return {"form": form, "world_size": world_size, "rank": rank, "buffer_size": buffer_size, "import_s": round(t_import, 2),
            "first_batch_s": round(first_batch_s, 2), "first_batch_cpu_s": round(first_batch_cpu_s, 2),
            "first_batch_cuts": len(first["cut_ids"]), "cuts_per_s": round(n_cuts / elapsed, 1),
            "cuts_per_cpu_s": round(n_cuts / cpu, 1), "sampled_cuts": n_cuts, "sampled_s": round(elapsed, 1),
            "sampled_cpu_s": round(cpu, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), "open_fds": fds}


def _run_one(form: str, root: Path, world_size: int, seconds: float, buffer_size: int) -> dict:
    cmd = [sys.executable, __file__, "--measure", form, "--root", str(root), "--world-size", str(world_size),
           "--seconds", str(seconds), "--buffer-size", str(buffer_size)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--num-cuts", type=int, nargs="+", default=[100000], help="corpus sizes (default 100000)")
    ap.add_argument("--world-sizes", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--seconds", type=float, default=5.0, help="sampler throughput window (CPU seconds)")
    ap.add_argument("--buffer-size", type=int, default=20000,
                    help="the sampler's buffer (data.buffer_size): its first batch waits until this many cuts of "
                         "the rank's own are read, so time to the first batch grows with the corpus until every rank "
                         "has this many cuts, then stays flat")
    ap.add_argument("--forms", nargs="+", choices=["jsonl", "shar"], default=["jsonl", "shar"])
    ap.add_argument("--work-dir", default="/tmp/dmtts_data_scale", help="generated corpora (reused)")
    ap.add_argument("--markdown", action="store_true", help="also print the table as markdown")
    ap.add_argument("--generate-only", action="store_true", help="only generate the corpora (a run of its own)")
    ap.add_argument("--replicate-from", type=int, default=0,
                    help="build each larger corpus as copies of this (already generated) size: no generation CPU")
    ap.add_argument("--measure", choices=["jsonl", "shar"], help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    ap.add_argument("--world-size", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, Path(args.root), args.world_size, args.world_size - 1, args.seconds,
                                 args.buffer_size)))
        return
    print(f"load average at start: {os.getloadavg()}", flush=True)
    rows = []
    for n in args.num_cuts:
        root = Path(args.work_dir) / f"n{n}"
        if args.replicate_from and n > args.replicate_from:
            info = replicate(n, Path(args.work_dir) / f"n{args.replicate_from}", root)
        else:
            info = generate(n, root)
        print(f"{n} cuts: generated in {info['generate_s']} s; jsonl {info['jsonl_mb']} MB, shar {info['shar_mb']} MB",
              flush=True)
        if args.generate_only:
            continue
        for ws in args.world_sizes:
            for form in args.forms:
                r = {"num_cuts": n, **_run_one(form, root, ws, args.seconds, args.buffer_size),
                     "load": round(os.getloadavg()[0], 1)}
                rows.append(r)
                print(json.dumps(r), flush=True)
    print(f"load average at end: {os.getloadavg()}")
    if rows:
        _report(rows, args.markdown)


def _report(rows: list[dict], markdown: bool) -> None:
    """The table: CPU-time figures (robust to a loaded machine), ratios to jsonl and to the smallest corpus."""
    by = {(r["num_cuts"], r["world_size"], r["form"]): r for r in rows}
    smallest = min(r["num_cuts"] for r in rows)
    lines = ["| cuts | rank | input | first batch: CPU s (wall s) | cuts per CPU s to this rank | x one GPU's need | "
             "peak RSS (MB) | open fds | vs jsonl: first batch, cuts/s, RSS | vs smallest corpus: first batch, "
             "cuts/s, RSS | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ref = by.get((r["num_cuts"], r["world_size"], "jsonl"), r)
        small = by.get((smallest, r["world_size"], r["form"]), r)
        lines.append(
            f"| {r['num_cuts']:,} | {r['rank']} of {r['world_size']} | {r['form']} | {r['first_batch_cpu_s']:.2f} "
            f"({r['first_batch_s']:.1f}) | {r['cuts_per_cpu_s']:,.0f} | {r['cuts_per_cpu_s'] / GPU_CUTS_PER_S:.2f} | "
            f"{r['peak_rss_mb']:,.0f} | {r['open_fds']} | {r['first_batch_cpu_s'] / ref['first_batch_cpu_s']:.2f}, "
            f"{r['cuts_per_cpu_s'] / ref['cuts_per_cpu_s']:.1f}, {r['peak_rss_mb'] / ref['peak_rss_mb']:.2f} | "
            f"{r['first_batch_cpu_s'] / small['first_batch_cpu_s']:.2f}, "
            f"{r['cuts_per_cpu_s'] / small['cuts_per_cpu_s']:.2f}, {r['peak_rss_mb'] / small['peak_rss_mb']:.2f} | "
            f"{r['load']} |")
    print("\n".join(lines) if markdown else "\n".join(lines[2:]))


if __name__ == "__main__":
    main()
