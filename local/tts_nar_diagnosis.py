#!/usr/bin/env python3
"""Diagnostic: what does the NAR add on top of level 1? For each zero-shot pair, the codec's
encoding of the real target recording gives the *true* codes; from its true level 1 the NAR
predicts levels 2..n_q. Writes one folder of wavs per variant, for `dmtts eval tts`:

* ``true``: all true levels (the codec's resynthesis: the bound for the whole TTS);
* ``level1``: the true level 1 alone (no NAR);
* ``argmax``: the NAR's greedy codes (what `dmtts synthesize` does);
* ``expected``: the codec latent built from the NAR's *expected* codebook vector at each level
  (probability-weighted, the mean-squared-error estimate of the residual), the NAR still fed its
  greedy codes level by level;
* ``argmax_to3``: greedy levels 2-3 only.

It also prints the NAR's teacher-forced accuracy per level (the true lower levels as input).

    python local/tts_nar_diagnosis.py --ar AR_DIR --nar NAR_DIR --codec CODEC_DIR \\
        --pairs PAIRS.jsonl.gz --output-dir exp/nar_diagnosis
    for v in true level1 argmax expected argmax_to3; do
      dmtts eval tts --synth-dir exp/nar_diagnosis/$v --pairs PAIRS.jsonl.gz --output-dir exp/nar_diagnosis/eval_$v --name $v
    done
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

VARIANTS = ("true", "level1", "argmax", "expected", "argmax_to3")


def main() -> None:
    from lhotse import load_manifest

    from dmtts.audio import save_audio
    from dmtts.data.subsets import load_prompt_audio
    from dmtts.tts.synthesize import Synthesizer, parse_asr_arg, prepare_prompt, transcribe_prompt

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ar", required=True, help="AR model: only its text front-end is used")
    p.add_argument("--nar", required=True)
    p.add_argument("--codec", required=True)
    p.add_argument("--pairs", required=True)
    p.add_argument("--output-dir", required=True, type=Path)
    p.add_argument("--prompt-seconds", type=float, default=3.0)
    p.add_argument("--asr", default="faster-whisper", help="transcribes prompts without a transcript")
    args = p.parse_args()
    synth = Synthesizer(args.ar, args.nar, args.codec)
    asr = parse_asr_arg(args.asr)
    codec, nar, n_q = synth.codec, synth.nar, synth.n_q
    books = [layer.embed.float() for layer in codec.quantizer.layers[:n_q]]  # [codebook_size, D] per level
    for v in VARIANTS:
        (args.output_dir / v).mkdir(parents=True, exist_ok=True)
    correct, frames = torch.zeros(n_q), 0
    with torch.inference_mode():
        for pair in load_manifest(args.pairs):
            prompt_wav = prepare_prompt(load_prompt_audio(pair, synth.sample_rate), synth.sample_rate, args.prompt_seconds)
            target = torch.from_numpy(pair.load_audio()[0].astype("float32"))
            true = codec.encode(target[None, None], n_q=n_q)[0].T.long()  # [T, n_q]
            prompt_text = pair.custom.get("prompt_text") or transcribe_prompt(asr, prompt_wav, pair.id)
            seq = synth.text.join_words(synth._symbols(prompt_text, "prompt"),
                                        synth._symbols(pair.custom["target_text"], "target"))
            text, text_lens = synth.text.collate([seq])
            prompt = synth._prompt_codes(prompt_wav).long()  # [P, n_q]
            P, T = prompt.shape[0], true.shape[0]
            total, plen = torch.tensor([P + T]), torch.tensor([P])
            codes = torch.cat([prompt, true], 0)[None]
            for k in range(2, n_q + 1):  # teacher forced: the true levels below k
                logits = nar._logits(text, text_lens, codes, total, plen, torch.tensor([k]))[0, P:]
                correct[k - 1] += (logits.argmax(-1) == true[:, k - 1]).sum()
            frames += T
            gen = codes.clone()
            gen[0, P:, 1:] = 0
            z = {v: books[0][true[:, 0]].clone() for v in ("level1", "argmax", "expected", "argmax_to3")}
            for k in range(2, n_q + 1):  # free running from the true level 1, as `dmtts synthesize`
                logits = nar._logits(text, text_lens, gen, total, plen, torch.tensor([k]))[0, P:].float()
                pred = logits.argmax(-1)
                gen[0, P:, k - 1] = pred
                z["argmax"] += books[k - 1][pred]
                z["expected"] += logits.softmax(-1) @ books[k - 1]
                if k <= 3:
                    z["argmax_to3"] += books[k - 1][pred]
            z["true"] = sum(books[k][true[:, k]] for k in range(n_q))
            for v in VARIANTS:
                wav = codec._decoder(z[v].T[None])[0, 0].float().numpy()
                save_audio(args.output_dir / v / f"{pair.id}.wav", wav, synth.sample_rate)
    acc = {f"level{k}": round(float(correct[k - 1]) / frames, 4) for k in range(2, n_q + 1)}
    (args.output_dir / "teacher_forced_accuracy.json").write_text(json.dumps(acc, indent=2) + "\n")
    print("teacher-forced NAR accuracy:", acc)


if __name__ == "__main__":
    main()
