#!/usr/bin/env python3
"""Check: does streamed codec decoding equal whole-utterance decoding? Encodes an audio file with
each codec, decodes its codes once whole and once chunk by chunk through the streaming decoder
(``dmtts.tts.streaming.decode_in_chunks``, the chunk sizes of ``StreamSettings``: 10 frames
doubling to 50), and prints the SNR of the streamed audio against the whole decode (float rounding alone
gives about 100 dB).

    python local/codec_stream_snr.py --codec recipes/demo/pretrained/codec [OTHER_CODEC ...] \\
        --audio recipes/demo/pretrained/prompt.wav
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from dmtts.audio import load_audio
from dmtts.codec.model import DMCodec
from dmtts.tts.streaming import StreamSettings, decode_in_chunks


def streamed_snr_db(codec: DMCodec, wav: np.ndarray) -> tuple[int, float]:
    """``(frames, SNR dB)`` of the streamed decode of ``wav``'s codes against their whole decode."""
    x = torch.as_tensor(wav, dtype=torch.float32).reshape(1, 1, -1)
    with torch.inference_mode():
        codes = codec.encode(x)[0].T  # [T, n_q], as synthesis hands them to the streaming decoder
        whole = codec.decode(codes.T[None])[0, 0].numpy()
        streamed, _ = decode_in_chunks(codec, codes, StreamSettings())
    n = min(len(whole), len(streamed))
    error = whole[:n] - streamed[:n]
    return len(codes), float(10 * np.log10((whole[:n] ** 2).sum() / max((error ** 2).sum(), 1e-30)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--codec", nargs="+", required=True, help="exported codec directories")
    parser.add_argument("--audio", required=True, help="an audio file to encode (resampled to the codec's rate)")
    args = parser.parse_args()
    for path in args.codec:
        codec = DMCodec.from_pretrained(path).eval()
        wav = load_audio(args.audio, codec.sample_rate)[0]
        frames, snr = streamed_snr_db(codec, np.asarray(wav))
        print(f"{path}: {frames} frames, streamed vs whole decode SNR {snr:.1f} dB")


if __name__ == "__main__":
    main()
