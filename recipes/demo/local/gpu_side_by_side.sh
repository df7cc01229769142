#!/usr/bin/env bash
# Train the quality codec, AR and NAR side by side on one GPU, under one wall-clock cap, then
# export what they reached (docs/quality.md, "On a GPU").
#
#   local/gpu_side_by_side.sh --work-dir quality --output-dir gpu_out --minutes 7 --codec-steps 20000 \
#     [--codec-batch-size 16] [--tts-max-duration 80]
#
# The AR and NAR train on the tokens in <work-dir>/data/tts (the codec that made them, e.g. the
# shipped one); the codec trains on <work-dir>/data/teachers. The three are independent jobs:
# one failing does not stop the others. Configs: conf/gpu/*.yaml, with the cap (and the codec's
# cosine length) written into copies under <work-dir>/exp_gpu. Results:
#   <output-dir>/codec.tar   the codec's fp16 export (mean of its last 4 checkpoints) + history
#   <output-dir>/ar.tar, nar.tar   fp16 exports of the newest and of the best-validated checkpoint
#   <output-dir>/logs.tar    logs, curves, tensorboard, GPU utilisation samples
set -uo pipefail
cd "$(dirname "$0")/.."   # recipes/demo

work_dir=quality
output_dir=gpu_out
minutes=7
codec_steps=20000
codec_batch_size=16     # crops per codec step (conf/gpu/codec_quality.yaml: 16)
tts_max_duration=80     # seconds of audio per AR/NAR batch (conf/gpu/{ar,nar}_quality.yaml: 80)
. ../../egs_tools/parse_options.sh
. ../../egs_tools/common.sh

conf=$(pwd)/conf/gpu
toolkit=$(cd ../.. && pwd)
export PYTHONPATH=${toolkit}${PYTHONPATH:+:${PYTHONPATH}}
mkdir -p "${output_dir}"
output_dir=$(cd "${output_dir}" && pwd)
cd "${work_dir}"
exp=exp_gpu
mkdir -p ${exp}

dmtts() { python3 -m dmtts "$@"; }

python3 - "${conf}" "${exp}" "${minutes}" "${codec_steps}" "${codec_batch_size}" "${tts_max_duration}" <<'EOF'
import sys, yaml
conf, exp = sys.argv[1], sys.argv[2]
minutes, codec_steps, codec_batch, tts_duration = float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
for name in ("codec", "ar", "nar"):
    cfg = yaml.safe_load(open(f"{conf}/{name}_quality.yaml"))
    section = cfg["train"] if name == "codec" else cfg["training"]
    section["max_minutes"] = minutes
    if name == "codec":
        section["max_steps"] = codec_steps
        cfg["data"]["batch_size"] = codec_batch
    else:
        cfg["data"]["max_duration"] = tts_duration
    yaml.safe_dump(cfg, open(f"{exp}/{name}.yaml", "w"), sort_keys=False)
EOF

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
# GPU load every 10 s while the three train
( while true; do nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null \
    | sed "s/^/$(date +%s) /"; sleep 10; done ) > ${exp}/gpu_util.log 2>&1 &
monitor=$!

log "training codec, AR and NAR side by side for at most ${minutes} minutes each"
start=$(date +%s)
dmtts codec train --config ${exp}/codec.yaml --exp-dir ${exp}/codec --no-progress > ${exp}/codec.log 2>&1 &
codec_job=$!
dmtts tts train --model ar --config ${exp}/ar.yaml --exp-dir ${exp}/ar --no-progress > ${exp}/ar.log 2>&1 &
ar_job=$!
dmtts tts train --model nar --config ${exp}/nar.yaml --exp-dir ${exp}/nar --no-progress > ${exp}/nar.log 2>&1 &
nar_job=$!
for job in codec ar nar; do
  var=${job}_job
  wait ${!var}; rc=$?
  log "${job} finished with status ${rc} after $(( $(date +%s) - start )) s"
  echo "${job} ${rc} $(( $(date +%s) - start ))" >> ${exp}/status.txt
done
kill ${monitor} 2>/dev/null

if [ -d ${exp}/codec/checkpoints ]; then
  dmtts codec export --checkpoint ${exp}/codec --out ${exp}/codec_avg4 --dtype float16 --avg 4 \
    || dmtts codec export --checkpoint ${exp}/codec --out ${exp}/codec_avg4 --dtype float16
  dmtts codec validate --checkpoint ${exp}/codec --avg 1 2 4 --out ${exp}/codec_validate.csv || true
  cp ${exp}/codec/*.json ${exp}/codec/*.csv ${exp}/codec/*.png ${exp}/codec_avg4/ 2>/dev/null
  tar -cf "${output_dir}/codec.tar" -C ${exp} codec_avg4 $(cd ${exp} && ls codec_validate.csv 2>/dev/null)
fi
for model in ar nar; do
  [ -d ${exp}/${model}/checkpoints ] || continue
  # the newest checkpoint, and the kept one with the lowest validation loss (a small corpus, many epochs)
  dmtts tts export --exp-dir ${exp}/${model} --out ${exp}/${model}_last --dtype float16
  dmtts tts export --exp-dir ${exp}/${model} --checkpoint best --out ${exp}/${model}_best --dtype float16
  cp ${exp}/${model}/curve.csv ${exp}/${model}/train_summary.json ${exp}/${model}/loss.png ${exp}/${model}_last/ 2>/dev/null
  for which in last best; do
    [ -d ${exp}/${model}_${which} ] && tar -cf "${output_dir}/${model}_${which}.tar" -C ${exp} ${model}_${which}
  done
done
# logs, curves and histories; tensorboard and the newest attention maps apart (the larger part)
tar -czf "${output_dir}/logs.tar.gz" -C ${exp} --exclude='*.pt' --exclude='codec_avg4' --exclude='*_last' \
  --exclude='*_best' --exclude=export --exclude=tensorboard --exclude=align .
tar -czf "${output_dir}/tensorboard.tar.gz" -C ${exp} $(cd ${exp} && ls -d */tensorboard) \
  $(cd ${exp} && ls ar/align/*.png 2>/dev/null | tail -n 3)
ls -la "${output_dir}"
cat ${exp}/status.txt
for job in codec ar nar; do echo "== ${job}"; tail -n 4 ${exp}/${job}.log; done
