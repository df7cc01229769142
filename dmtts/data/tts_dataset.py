"""Map-style lhotse dataset for DM-Codec-TTS training: a CutSet batch -> padded tensors.

Each cut needs codec codes (``cut.codes``, see ``dmtts.data.codes``) and text symbols (see
``dmtts.tts.frontend.TTSText``). A batch is::

    {"text": LongTensor [B, L], "text_lens": [B],
     "codes": LongTensor [B, T, n_q] (padded with 0), "code_lens": [B], "cut_ids": [...]}

Code files (HDF5) are closed once more than ``MAX_OPEN_HDF5`` are open (``dmtts.data.open_files``).
"""

from __future__ import annotations

import torch

from dmtts.data.codes import load_codes
from dmtts.data.open_files import release_hdf5_handles


class TTSDataset(torch.utils.data.Dataset):
    def __init__(self, frontend, n_q: int = 8):
        self.frontend = frontend
        self.n_q = n_q

    def __getitem__(self, cuts) -> dict:
        cuts = cuts.sort_by_duration(ascending=False)
        codes = [torch.from_numpy(load_codes(c).astype("int64"))[:, : self.n_q] for c in cuts]
        release_hdf5_handles()  # at most MAX_OPEN_HDF5 code files open, whatever the corpus size
        for c, x in zip(cuts, codes):
            if x.shape[1] < self.n_q:
                raise ValueError(f"cut '{c.id}' has codes with {x.shape[1]} levels, the model needs {self.n_q}")
        text, text_lens = self.frontend.collate([self.frontend.cut_symbols(c) for c in cuts])
        code_lens = torch.tensor([x.shape[0] for x in codes], dtype=torch.long)
        padded = torch.zeros(len(codes), int(code_lens.max()), self.n_q, dtype=torch.long)
        for i, x in enumerate(codes):
            padded[i, : x.shape[0]] = x
        return {
            "text": text,
            "text_lens": text_lens,
            "codes": padded,
            "code_lens": code_lens,
            "cut_ids": [c.id for c in cuts],
        }
