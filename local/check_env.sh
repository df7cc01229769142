#!/usr/bin/env bash
# Checks, before a recipe starts, that the tools it calls are there; prints what is missing
# and how to get it. Usage (from a recipe directory): ../../local/check_env.sh [--need-espeak]
# (--need-espeak: the demo recipe's voices, and codec2 + opus-tools for its report's baselines)
set -u
status=0
if ! command -v dmtts >/dev/null 2>&1; then
  echo "dmtts is not on PATH: run 'make venv' in the repository root and 'source .venv/bin/activate'" >&2
  status=1
fi
if [ "${1:-}" = "--need-espeak" ]; then
  # the demo corpus: espeak-ng (phonemizer), flite and festival's text2wave (voices)
  for tool in espeak-ng flite text2wave; do
    command -v "${tool}" >/dev/null 2>&1 || {
      echo "${tool} is missing: sudo apt-get install -y espeak-ng flite festival festvox-kallpc16k" \
        "festvox-kdlpc16k festvox-us-slt-hts" >&2; status=1; }
  done
  # the demo's report scores codec2 and Opus beside its codecs (dmtts eval codec --baselines)
  for tool in c2enc:codec2 c2dec:codec2 opusenc:opus-tools opusdec:opus-tools; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || {
      echo "${tool%%:*} is missing: sudo apt-get install -y ${tool#*:} (the classic-codec baselines)" >&2; status=1; }
  done
fi
if command -v python >/dev/null 2>&1; then
  python - <<'PY' || status=1
import torch
n = torch.cuda.device_count()
print(f"torch {torch.__version__}; {n} CUDA device(s)" + ("" if n else " (training runs on CPU)"))
PY
fi
exit ${status}
