#!/usr/bin/env python3
"""Diagnostic: how much of a zero-shot TTS's error is the AR's? Give the NAR the *true* level-1
codes of each pair's target (the codec's encoding of the real recording) instead of the AR's,
and write the NAR + codec output as ``OUT/<cut_id>.wav`` for ``dmtts eval tts``.

    python local/tts_oracle_level1.py --nar NAR_DIR --ar AR_DIR --codec CODEC_DIR \
        --pairs PAIRS.jsonl.gz --output-dir exp/oracle_level1/synth

The AR directory only supplies the text front-end (the sequence is built as `dmtts synthesize`
builds it). The score of these files is a bound: the best WER the NAR and the codec allow.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def main() -> None:
    from lhotse import load_manifest

    from dmtts.audio import save_audio
    from dmtts.data.subsets import load_prompt_audio
    from dmtts.tts.synthesize import Synthesizer, parse_asr_arg, transcribe_prompt

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ar", required=True)
    p.add_argument("--nar", required=True)
    p.add_argument("--codec", required=True)
    p.add_argument("--pairs", required=True)
    p.add_argument("--output-dir", required=True, type=Path)
    p.add_argument("--asr", default="faster-whisper", help="transcribes prompts without a transcript")
    args = p.parse_args()
    synth = Synthesizer(args.ar, args.nar, args.codec)
    asr = parse_asr_arg(args.asr)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        for pair in load_manifest(args.pairs):
            prompt_wav = load_prompt_audio(pair, synth.sample_rate)
            target_wav = torch.from_numpy(pair.load_audio()[0].astype("float32"))
            true = synth.codec.encode(target_wav[None, None], n_q=synth.n_q)[0].T  # [T, n_q]
            prompt_text = pair.custom.get("prompt_text") or transcribe_prompt(asr, prompt_wav, pair.id)
            seq = synth.text.join_words(synth._symbols(prompt_text, "prompt"),
                                        synth._symbols(pair.custom["target_text"], "target"))
            text, text_lens = synth.text.collate([seq])
            prompt = synth._prompt_codes(prompt_wav)[None]
            full = synth.nar.generate(text, text_lens, prompt, torch.tensor([prompt.shape[1]]),
                                      true[None, :, 0], torch.tensor([true.shape[0]]))[0]
            wav = synth.codec.decode(full.T[None])[0, 0].float().numpy()
            save_audio(args.output_dir / f"{pair.id}.wav", wav, synth.sample_rate)
    print(args.output_dir)


if __name__ == "__main__":
    main()
