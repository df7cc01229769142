"""CLI of DM-Codec-TTS: ``dmtts tokenize``, ``dmtts tts train|export``, ``dmtts synthesize``."""

from __future__ import annotations

import argparse

from dmtts.utils import STORAGE_DTYPES


def register(subparsers) -> None:
    from dmtts.train.cli_args import add_training_arguments

    p = subparsers.add_parser(
        "tokenize",
        help="encode cuts into codec codes (cut.codes, int16 (T, 8))",
        description="Encode the audio of a CutSet with a trained codec. Writes <output-dir>/<cuts file name> "
        "(the tokenized cuts, in input order) and the codes in <output-dir>/<name>_codes/; re-running resumes "
        "(cuts already stored are skipped), also with another number of processes. Sharded over GPUs/nodes: "
        "torchrun --nproc-per-node N -m dmtts.cli tokenize ...",
    )
    p.add_argument("--codec", required=True, help="exported codec directory (or preset:NAME, random weights, for tests)")
    p.add_argument("--cuts", required=True, help="input cuts (.jsonl.gz)")
    p.add_argument("--output-dir", required=True, help="where the tokenized cuts and the codes go")
    p.add_argument("--batch-duration", type=float, default=60.0, help="seconds of audio per encoder batch (default 60)")
    p.add_argument("--chunk-size", type=int, default=1000,
                   help="consecutive cuts per chunk: sorted by duration into batches, committed together, the unit "
                   "of work of a torchrun rank; a hard kill loses at most one per rank (default 1000)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto; under torchrun cuda:LOCAL_RANK)")
    p.add_argument("--overwrite", action="store_true", help="discard codes from an earlier run in --output-dir")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_tokenize)

    t = subparsers.add_parser("tts", help="train / export the AR and NAR TTS models")
    tsub = t.add_subparsers(dest="tts_command", metavar="SUBCOMMAND", required=True)
    tr = tsub.add_parser(
        "train",
        help="train the AR or the NAR model",
        description="Train one DM-Codec-TTS model. Under torchrun it trains with DDP: "
        "torchrun --nproc-per-node N -m dmtts.cli tts train ...",
    )
    tr.add_argument("--model", required=True, choices=["ar", "nar"])
    add_training_arguments(tr, "YAML training config (see recipes/*/conf/ar*.yaml)")
    tr.set_defaults(func=_train)
    ex = tsub.add_parser("export", help="export a checkpoint as a model directory for dmtts synthesize")
    ex.add_argument("--exp-dir", required=True)
    ex.add_argument("--out", required=True, help="output directory (config.json, model.safetensors, symbols)")
    ex.add_argument("--checkpoint", default=None, help="checkpoint file (default: the newest in --exp-dir; 'best': the kept "
                         "checkpoint with the lowest validation loss)")
    ex.add_argument("--dtype", choices=STORAGE_DTYPES, default="float32",
                    help="storage precision of the weights (float16: half the size; loaded as float32)")
    ex.set_defaults(func=_export)

    s = subparsers.add_parser(
        "synthesize",
        help="zero-shot TTS: text + 3 s prompt -> speech",
        description="One text of any length (--text, --prompt-audio, --out; long text is split into sentences), "
        "a file of texts (--text-file, --prompt-audio, --output-dir: one wav per line), or a TTS evaluation pair "
        "manifest (--pairs, --output-dir; from 'dmtts subset librispeech-tts-eval|vctk-tts-eval'; sharded under "
        "torchrun). Every AR output is checked (no end token, a loop, an implausible duration) and retried with a "
        "new seed up to --max-retries times.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    s.add_argument("--ar", required=True, help="exported AR model directory")
    s.add_argument("--nar", required=True, help="exported NAR model directory")
    s.add_argument("--codec", required=True, help="exported codec directory")
    s.add_argument("--text", default=None, help="text to synthesize (any length)")
    s.add_argument("--text-file", default=None, help="UTF-8 file, one text per line -> <out-dir>/lineNNNNN.wav")
    s.add_argument("--prompt-audio", default=None, help="prompt recording of the target speaker (>= 1 s)")
    s.add_argument("--prompt-text", default=None, help="transcript of the prompt (default: transcribe it with --asr)")
    s.add_argument("--out", default=None, help="output wav (--text mode; with --stream, - writes a WAV stream to stdout)")
    s.add_argument("--pairs", default=None, help="TTS evaluation pairs (.jsonl.gz)")
    s.add_argument("--output-dir", default=None, help="output directory (--text-file / --pairs): wavs + manifest.jsonl")
    s.add_argument("--repeats", type=int, default=1, help="syntheses per pair (VALL-E protocol: 3) -> <cut_id>_rep{i}.wav")
    s.add_argument("--batch-size", type=int, default=8, help="sentences / utterances per batch")
    s.add_argument("--overwrite", action="store_true", help="pairs mode: start over instead of resuming")
    s.add_argument("--asr", default="faster-whisper",
                   help="ASR for missing prompt transcripts: faster-whisper (bundled Whisper tiny.en) | BACKEND:DIR | "
                   "none (demand transcripts)")
    s.add_argument("--prompt-seconds", type=float, default=3.0, help="cut the prompt to this length (0: keep all)")
    s.add_argument("--top-k", type=int, default=50)
    s.add_argument("--top-p", type=float, default=1.0)
    s.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    s.add_argument("--ras", action=argparse.BooleanOptionalAction, default=False,
                   help="repetition-aware sampling (VALL-E 2): redraw from the full distribution a code that fills "
                   "more than --ras-threshold of the last --ras-window codes")
    s.add_argument("--ras-window", type=int, default=10)
    s.add_argument("--ras-threshold", type=float, default=0.1)
    s.add_argument("--max-retries", type=int, default=2,
                   help="new-seed retries of a failed AR generation (each recorded in the manifest)")
    s.add_argument("--max-loop-seconds", type=float, default=1.0,
                   help="a code n-gram (n <= 25) repeated back to back over longer than this is a failed generation")
    s.add_argument("--duration-range", type=float, nargs=2, default=[0.5, 2.0], metavar=("LOW", "HIGH"),
                   help="accepted duration, relative to the prompt's speaking rate x the text's length")
    s.add_argument("--sentence-pause", type=float, default=0.3, help="seconds of silence between sentences")
    s.add_argument("--max-words", type=int, default=40, help="a longer sentence is cut at a clause boundary")
    s.add_argument("--max-len-ratio", type=float, default=None,
                   help="max frames per target text token (default: the AR model's exported value)")
    s.add_argument("--seed", type=int, default=42)
    s.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    s.add_argument("--device", default="auto")
    s.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                   help="weight dtype of the AR/NAR models: float16 about halves AR decoding time on CPUs with fast "
                   "fp16 kernels and on GPUs; bfloat16 on GPUs / CPUs with AMX")
    s.add_argument("--quantize", default="none", choices=["none", "int8"],
                   help="int8: torch.ao dynamic int8 quantization of the AR's and NAR's linear layers (CPU); see "
                   "the README for its measured speed and effect on the output")
    s.add_argument("--nar-decoding", default="argmax", choices=["argmax", "expected"],
                   help="argmax: the NAR's greedy codes (VALL-E); expected: the codec decoder on the expected "
                   "latent under the NAR's distributions (helps an uncertain NAR; not with --stream; README)")
    st = s.add_argument_group("streaming (--text only)", "audio written chunk by chunk while the AR is still generating "
                              "(dmtts.tts.streaming); sizes in codec frames (50 per second)")
    st.add_argument("--stream", action="store_true",
                    help="stream: write each chunk as soon as it is ready (--out - writes a WAV stream to stdout); "
                    "a streamed sentence is not retried")
    st.add_argument("--stream-first-chunk-frames", type=int, default=10,
                    help="frames of the first chunk (the time to first audio); later chunks double in size")
    st.add_argument("--stream-chunk-frames", type=int, default=50, help="largest chunk, in frames")
    st.add_argument("--stream-lookahead-frames", type=int, default=4,
                    help="level-1 frames after a chunk that the NAR sees before the chunk's codes are final")
    st.add_argument("--stream-context-frames", type=int, default=50,
                    help="level-1 frames before a chunk that the NAR sees (with the whole prompt and text)")
    s.set_defaults(func=_synthesize)


def _tokenize(args) -> int:
    from dmtts.codec.model import load_codec
    from dmtts.data.sharding import shard_context
    from dmtts.tts.tokenize import tokenize_cuts

    ctx = shard_context(args.device)  # torchrun: one shard of the cuts per rank
    try:
        codec = load_codec(args.codec, ctx.device)
        tokenize_cuts(codec, args.cuts, args.output_dir, args.batch_duration, ctx.device, progress=not args.no_progress,
                      chunk_size=args.chunk_size, ctx=ctx, overwrite=args.overwrite)
    finally:
        ctx.close()
    return 0


def _train(args) -> int:
    from dmtts.tts.train import train

    train(args.model, args.config, args.exp_dir, resume=args.resume, progress=not args.no_progress)
    return 0


def _export(args) -> int:
    from dmtts.tts.export import export_checkpoint

    out = export_checkpoint(args.exp_dir, args.out, args.checkpoint, dtype=args.dtype)
    print(out)
    return 0


def _synthesize(args) -> int:
    from dmtts.errors import DmttsError
    from dmtts.tts import synthesize_cli as syn

    modes = [f for f, v in (("--text", args.text), ("--text-file", args.text_file), ("--pairs", args.pairs)) if v]
    if len(modes) != 1:
        raise DmttsError(f"give exactly one of --text, --text-file or --pairs (got {', '.join(modes) or 'none'})")
    if args.stream and not args.text:
        raise DmttsError(f"--stream streams one text (--text ... --out OUT.wav or --out -), not {modes[0]}")
    if args.pairs:
        if args.output_dir is None:
            raise DmttsError("--pairs needs --output-dir")
        if args.prompt_audio or args.out:
            raise DmttsError("--pairs cannot be combined with --prompt-audio/--out (the pairs name their prompts)")
        from dmtts.tts.synthesize_pairs import synthesize_pairs

        synthesize_pairs(args)
        return 0
    if args.text_file:
        missing = [f for f, v in (("--prompt-audio", args.prompt_audio), ("--output-dir", args.output_dir)) if v is None]
        if missing or args.out:
            raise DmttsError("--text-file needs --prompt-audio and --output-dir (one wav per line), not --out")
        syn.synthesize_text_file(args)
        return 0
    missing = [f for f, v in (("--prompt-audio", args.prompt_audio), ("--out", args.out)) if v is None]
    if missing:
        raise DmttsError(f"missing {', '.join(missing)}: give --text, --prompt-audio and --out")
    if args.stream:
        syn.synthesize_stream(args)
        return 0
    syn.synthesize_one(args)
    return 0
