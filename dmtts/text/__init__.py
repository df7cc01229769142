"""Text front-ends: English normalisation, espeak-ng phonemes or sentencepiece BPE, symbol
tables and the token collater. Import from here::

    from dmtts.text import build_text_frontend, SymbolTable, TextTokenCollater

(Attributes are imported lazily so ``dmtts --help`` does not pay for torch.)
"""

import importlib

_EXPORTS = {
    "TextTokenCollater": "dmtts.text.collater",
    "TextFrontend": "dmtts.text.frontend",
    "build_text_frontend": "dmtts.text.frontend",
    "FRONTEND_KINDS": "dmtts.text.frontend",
    "SymbolTable": "dmtts.text.symbols",
    "normalize_english": "dmtts.text.tts_input_norm",
    "Phonemizer": "dmtts.text.phonemizer",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dmtts.text' has no attribute {name!r}")
