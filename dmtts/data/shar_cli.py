"""``dmtts shar export``: a cuts file -> Lhotse Shar shards for training at scale.

Each shard holds ``--shard-size`` consecutive cuts of the input: ``cuts.<tag>.jsonl.gz`` plus one
tar per field. Which fields (``--fields``):

* ``codec``: ``recording`` (audio, FLAC) plus the teacher features ``lm_feats`` / ``sm_feats``
  that the cuts have (``dmtts teachers extract``);
* ``tts``: ``codes`` (``dmtts tokenize``); the phoneme tokens are part of the cuts
  (``supervision.custom["phonemes"]``) and ride in the cuts files; the audio stays a reference to
  the original files. ``tts+audio`` also packs the audio;
* or a comma list of ``recording``, ``codes``, ``lm_feats``, ``sm_feats``.

Sharded and resumable like the other offline stages (``dmtts.data.sharding``): under
``torchrun`` each rank exports whole blocks of ``--shard-size`` input cuts, a shard is a commit
unit, a rerun skips committed shards (a kill loses at most the shard being written). Rank 0
then writes ``shar_index.json``, which marks the export finished; training reads only the shards
it lists.
"""

from __future__ import annotations

import logging
from pathlib import Path

from dmtts.errors import DmttsError

log = logging.getLogger(__name__)

ARRAY_FIELDS = ("codes", "lm_feats", "sm_feats")
PRESETS = {"codec": ("recording", "lm_feats", "sm_feats"), "tts": ("codes",), "tts+audio": ("recording", "codes")}
# presets name what a stage can use; of these, only what the first cut has is exported, except:
REQUIRED = {"codec": ("recording",), "tts": ("codes",), "tts+audio": ("recording", "codes")}
HINTS = {"recording": "prepare the cuts with audio (`dmtts prepare`)", "codes": "run `dmtts tokenize` on them",
         "lm_feats": "run `dmtts teachers extract` on them", "sm_feats": "run `dmtts teachers extract` on them"}


def register(subparsers) -> None:
    p = subparsers.add_parser("shar", help="Lhotse Shar shards: training input without a global manifest pass")
    sub = p.add_subparsers(dest="shar_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: p.print_help() or 1)
    e = sub.add_parser("export", help="write a cuts file with the fields a stage needs as Shar shards "
                                      "(sharded, resumable; torchrun for several ranks)")
    e.add_argument("--cuts", required=True, help="input cuts (.jsonl.gz): tokenized for tts, with teacher "
                                                 "features for codec")
    e.add_argument("--output-dir", required=True, help="Shar directory: shar_index.json + shards/; give it as "
                                                       "data.train_cuts")
    e.add_argument("--fields", default="tts", help="codec | tts | tts+audio, or a comma list of recording, codes, "
                                                   "lm_feats, sm_feats (default: tts)")
    e.add_argument("--shard-size", type=int, default=1000, help="cuts per shard (default 1000)")
    e.add_argument("--audio-format", default="flac", choices=["flac", "wav"], help="audio codec in the tars")
    e.add_argument("--overwrite", action="store_true", help="discard an export with other settings")
    e.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    e.set_defaults(func=_export)


def _export(args) -> int:
    index = export_shar(args.cuts, args.output_dir, args.fields, shard_size=args.shard_size,
                        audio_format=args.audio_format, overwrite=args.overwrite, progress=not args.no_progress)
    if index is not None:
        print(f"{index['num_cuts']} cuts in {index['num_shards']} shards ({', '.join(index['fields'])}) "
              f"-> {args.output_dir}")
    return 0


def resolve_fields(spec: str, first_cut, audio_format: str = "flac") -> dict[str, str]:
    """``--fields`` -> ``{field: lhotse Shar writer}`` for the fields to export."""
    spec = (spec or "").strip()
    if spec in PRESETS:
        wanted, required = PRESETS[spec], REQUIRED[spec]
        wanted = [f for f in wanted if f in required or _has(first_cut, f)]
    else:
        wanted = [f.strip() for f in spec.split(",") if f.strip()]
        bad = [f for f in wanted if f not in ("recording", *ARRAY_FIELDS)]
        if bad or not wanted:
            raise DmttsError(f"--fields '{spec}': give codec, tts, tts+audio or a comma list of recording, codes, "
                             "lm_feats, sm_feats")
        required = wanted
    for f in required:
        if not _has(first_cut, f):
            raise DmttsError(f"--fields {spec}: cut '{first_cut.id}' has no {f}: {HINTS[f]}")
    return {f: (audio_format if f == "recording" else "numpy") for f in wanted}


def _has(cut, field: str) -> bool:
    return cut.has_recording if field == "recording" else cut.has_custom(field)


def export_shar(cuts_path, output_dir, fields: str = "tts", shard_size: int = 1000, audio_format: str = "flac",
                overwrite: bool = False, progress: bool = True) -> dict | None:
    """Export ``cuts_path`` as Shar shards into ``output_dir``; returns the index on rank 0."""
    from lhotse.shar.writers.shar import SharWriter
    from tqdm import tqdm

    from dmtts.data.shar import INDEX_NAME, SHARDS_DIR, write_index
    from dmtts.data.sharding import ShardedJob, read_lhotse_items, shard_context, sigterm_as_interrupt
    from dmtts.utils import require_file

    require_file(cuts_path, "--cuts", "give a lhotse cuts file (.jsonl.gz)")
    if shard_size < 1:
        raise DmttsError(f"--shard-size must be >= 1, got {shard_size}")
    first = next(iter(read_lhotse_items(Path(cuts_path))), None)
    if first is None:
        raise DmttsError(f"--cuts '{cuts_path}' has no cuts")
    writers = resolve_fields(fields, first, audio_format)
    out = Path(output_dir)
    shards_dir = out / SHARDS_DIR
    ctx = shard_context("cpu")
    job = ShardedJob(cuts_path, work_dir=out / "progress", ctx=ctx, data_dir=shards_dir,
                     settings={"fields": writers, "shard_size": shard_size}, overwrite=overwrite,
                     block_size=shard_size)
    if ctx.is_main:  # the settings matched (or --overwrite): unfinished until the index is rewritten
        (out / INDEX_NAME).unlink(missing_ok=True)
    pbar = tqdm(desc="shar export", unit="cut", disable=not (progress and ctx.is_main), dynamic_ncols=True)
    with sigterm_as_interrupt():
        for block in job.todo_blocks():
            unit = job.new_unit()
            # one shard per unit; a shard that does not complete is never committed and its files
            # are deleted at the next start (ShardedJob), so every listed shard is whole
            with SharWriter(shards_dir, fields=writers, shard_size=None, shard_suffix=f".{unit.tag}",
                            warn_unused_fields=False) as writer:
                for index, cut in block:
                    try:
                        writer.write(cut)
                    except Exception as e:
                        raise DmttsError(f"cannot export cut '{cut.id}' of '{cuts_path}': {e}") from None
                    unit.add(index, cut.id, {"shard": unit.tag})
                    pbar.update(1)
            job.commit(unit, files=[p for paths in writer.output_paths.values() for p in paths])
    pbar.close()
    job.finish()
    index = None
    if ctx.is_main:
        shards: dict[str, list[int]] = {}  # tag -> [first input position, cuts]
        for position, _, record in job.merged():
            shards.setdefault(record["shard"], [position, 0])[1] += 1
        entries = []
        for tag, (_, n) in sorted(shards.items(), key=lambda kv: kv[1][0]):
            entry = {"cuts": f"{SHARDS_DIR}/cuts.{tag}.jsonl.gz"}
            entry.update({f: f"{SHARDS_DIR}/{f}.{tag}.tar" for f in writers})
            entries.append({**entry, "num_cuts": n})
        index = write_index(out, entries, writers, source=cuts_path)
        log.info("exported %d cuts in %d shards to %s", index["num_cuts"], len(entries), out)
    ctx.close()
    return index
