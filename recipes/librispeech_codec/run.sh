#!/usr/bin/env bash
# Train DM-Codec on LibriSpeech (paper §4): train-clean-100, 3 s crops, paper preset.
#
#   ./run.sh --corpus-dir /data/LibriSpeech                      # all stages, LM+SM variant
#   ./run.sh --variant lm --stage 3 --stop-stage 4               # another variant, some stages
#   ./run.sh --variant lm_sm --num-gpus 2 --stage 3              # DDP with torchrun
#   ./run.sh --num-nodes 2 --node-rank R --master-addr node0 --num-gpus 8   # on each of 2 nodes
#
# Variants (conf/<variant>.yaml): baseline, lm, sm, lm_sm, cls.
# Stages: 0 download (skipped when the corpus is on disk), 1 prepare manifests, 2 teacher
# features, 3 train (from Lhotse Shar shards with --shar yes, or auto from --shar-min-cuts
# training cuts: the shards are exported first), 4 export, 5 evaluate (300 test-clean utterances, seed 42; 1/3/6/8 RVQ levels),
# 6 significance (almost stochastic order) between all variants evaluated so far.
# Every stage is one `dmtts` call; finished steps leave a marker in exp/.done/ and are skipped on
# the next run (delete the marker to redo one). Training resumes from its last checkpoint.
# Teacher extraction, training and evaluation run on num_gpus processes per node x num_nodes
# nodes through torchrun (extraction and evaluation sharded by cut, resumable with any world
# size); the other stages run on node 0 only. Multi-node: run this script on every node with its
# --node-rank; this directory must be on a filesystem shared by all nodes.
set -euo pipefail
cd "$(dirname "$0")"

stage=0
stop_stage=6
corpus_dir=download/LibriSpeech   # LibriSpeech root (holds train-clean-100/, dev-clean/, test-clean/)
variant=lm_sm                     # baseline | lm | sm | lm_sm | cls
lm_dir=download/models/bert-base-uncased       # local Hugging Face dir of the LM teacher
sm_dir=download/models/hubert-base-ls960       # local Hugging Face dir of the SM teacher
num_gpus=1                        # processes per node (GPUs; CPU: gloo processes); >1 or num_nodes>1: torchrun
num_nodes=1                       # nodes taking part (run this script on each, with its --node-rank)
node_rank=0                       # this node: 0 .. num_nodes-1 (node 0 runs the single-process stages)
master_addr=localhost             # host name / IP of node 0 (torchrun rendezvous)
master_port=29500                 # free TCP port on node 0
batch_size=8                      # teacher extraction batch size
window_asr=faster-whisper         # ASR for the text of the 3 s training windows (paper: wav2vec 2.0 CTC, hf-ctc:DIR)
asr=faster-whisper                # ASR for WER/WIL (paper: hf-whisper:DIR of a local Whisper)
sim=resemblyzer                   # speaker similarity (paper: wavlm:DIR of a local WavLM x-vector model)
mos=dnsmos                        # MOS proxy: dnsmos | utmos:FILE
shar=auto                         # train from Lhotse Shar shards: yes | no | auto (yes from shar_min_cuts cuts)
shar_min_cuts=1000000             # auto: Shar for a training set of at least this many cuts
help_message="LibriSpeech DM-Codec recipe: download -> prepare -> teachers -> train -> export"

. ../../egs_tools/parse_options.sh
. ../../egs_tools/common.sh

done_dir=exp/.done
exp_dir=exp/codec_${variant}
conf=conf/${variant}.yaml
[ -f "${conf}" ] || { log "unknown --variant ${variant}: no ${conf}"; exit 1; }
parts="train-clean-100 dev-clean test-clean"

if run_stage 0 && main_node && ! stage_done download; then
  missing=""
  for p in ${parts}; do [ -d "${corpus_dir}/${p}" ] || missing="${missing} ${p}"; done
  if [ -z "${missing}" ]; then
    log "Stage 0: LibriSpeech already in ${corpus_dir}; skipping the download"
  else
    log "Stage 0: download${missing} into $(dirname "${corpus_dir}") (needs internet)"
    dmtts download librispeech --target-dir "$(dirname "${corpus_dir}")" --parts ${missing}
  fi
  mark_done download
fi

if run_stage 1 && main_node && ! stage_done prepare; then
  log "Stage 1: lhotse manifests and cuts for ${parts}"
  dmtts prepare librispeech --corpus-dir "${corpus_dir}" --output-dir data --parts ${parts}
  mark_done prepare
fi

if run_stage 2; then
  # The CLS variant needs the [CLS] row of the LM; the others the all-layer token average.
  lm_target=avg; feats_dir=data/teachers
  if [ "${variant}" = cls ]; then lm_target=cls; feats_dir=data/teachers_cls; fi
  if [ "${variant}" = baseline ]; then
    log "Stage 2: the baseline uses no teacher features; skipping"
  elif ! stage_done "teachers_${lm_target}"; then
    log "Stage 2: 3 s windows (text: ${window_asr}), then teacher features (LM ${lm_dir}, target ${lm_target}; SM ${sm_dir}) into ${feats_dir}"
    ! run_stage 1 || wait_done prepare
    # As the paper: fixed 3 s windows first, each transcribed, the LM run on the window's own
    # text; the codec then trains on whole windows (data.crop_seconds 3.0, no further crop).
    # The whole-utterance LM target is an ablation: see the README (Windowed LM targets).
    if main_node && ! stage_done windows; then
      for p in train-clean-100 dev-clean; do
        dmtts segment --cuts data/cuts/librispeech_cuts_${p}.jsonl.gz --out data/windows/librispeech_cuts_${p}.jsonl.gz \
          --window 3.0 --min-window 1.0 --asr "${window_asr}" --device auto
      done
      mark_done windows
    fi
    wait_done windows
    for p in train-clean-100 dev-clean; do
      dmtts_dist teachers extract --cuts data/windows/librispeech_cuts_${p}.jsonl.gz --output-dir "${feats_dir}" \
        --lm-dir "${lm_dir}" --sm-dir "${sm_dir}" --lm-target "${lm_target}" --batch-size "${batch_size}"
    done
    mark_done "teachers_${lm_target}"
  fi
fi

if run_stage 3 && ! stage_done "train_${variant}"; then
  log "Stage 3: train DM-Codec (${variant}) in ${exp_dir}"
  [ "${variant}" = baseline ] || ! run_stage 2 || wait_done "teachers_$([ "${variant}" = cls ] && echo cls || echo avg)"
  # Lhotse Shar (--shar yes, or auto from --shar-min-cuts training cuts): the training cuts with
  # their audio and teacher features as shards, at most 1000 cuts each and at least 4 per reader
  # (ranks x DataLoader workers); training then reads them instead of the cuts file.
  train_conf=${conf}
  if [ "${shar}" != no ]; then
    plan=$(python - "${conf}" "${shar}" "${shar_min_cuts}" "$((num_gpus * num_nodes))" <<'PY'
import gzip, sys
from dmtts.codec.config import load_training_config
conf, mode, min_cuts, world = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if mode not in ("yes", "auto"):
    sys.exit(f"--shar must be yes, no or auto, got '{mode}'")
data = load_training_config(conf).data
n = sum(1 for _ in gzip.open(data.train_cuts, "rb"))
use = mode == "yes" or n >= min_cuts
print(data.train_cuts, max(1, min(1000, n // (4 * world * max(data.num_workers, 1)))) if use else 0)
PY
)
    read -r train_cuts shard_size <<< "${plan}"
    shar_dir=data/shar/$(basename "${train_cuts}" .jsonl.gz)
    if [ "${shard_size}" -gt 0 ]; then
      if ! stage_done "shar_$(basename "${shar_dir}")"; then
        log "Stage 3: Lhotse Shar shards of ${train_cuts} (audio + teacher features, ${shard_size} cuts each) -> ${shar_dir}"
        dmtts_dist shar export --cuts "${train_cuts}" --output-dir "${shar_dir}" --fields codec --shard-size "${shard_size}"
        mark_done "shar_$(basename "${shar_dir}")"
      fi
      wait_done "shar_$(basename "${shar_dir}")"
      train_conf=exp/conf_${variant}_shar.yaml
      python - "${conf}" "${shar_dir}" "${train_conf}" <<'PY'
import os, sys, yaml
conf, shar_dir, out = sys.argv[1:]
cfg = yaml.safe_load(open(conf))
cfg.setdefault("data", {}).update(train_cuts=shar_dir, drop_last=False)  # each worker keeps its partial batch
tmp = f"{out}.{os.getpid()}"  # every node writes the same file: atomically
open(tmp, "w").write(yaml.safe_dump(cfg, sort_keys=False))
os.replace(tmp, out)
PY
    fi
  fi
  resume=""
  [ -d "${exp_dir}/checkpoints" ] && resume="--resume"
  dmtts_dist codec train --config "${train_conf}" --exp-dir "${exp_dir}" ${resume}
  mark_done "train_${variant}"
fi

if run_stage 4 && main_node && ! stage_done "export_${variant}"; then
  log "Stage 4: export ${exp_dir} -> ${exp_dir}/export (weight norm folded)"
  dmtts codec export --checkpoint "${exp_dir}" --out "${exp_dir}/export"
  dmtts codec info --model "${exp_dir}/export"
  mark_done "export_${variant}"
fi
if run_stage 5 && ! stage_done "eval_${variant}"; then
  log "Stage 5: evaluate ${variant}: reconstruction of the 300-utterance test-clean subset"
  if main_node && ! stage_done codec_eval_subset; then
    dmtts subset codec-eval --cuts data/cuts/librispeech_cuts_test-clean.jsonl.gz --num 300 --seed 42 \
      --out data/cuts/codec_eval.jsonl.gz
    mark_done codec_eval_subset
  fi
  ! run_stage 4 || wait_done "export_${variant}"
  wait_done codec_eval_subset
  dmtts_dist eval codec --model "${exp_dir}/export" --cuts data/cuts/codec_eval.jsonl.gz --output-dir "${exp_dir}/eval" \
    --name "dmcodec_${variant}" --n-q 1 3 6 8 --asr "${asr}" --sim "${sim}" --mos "${mos}"
  mark_done "eval_${variant}"
fi

if run_stage 6 && main_node; then
  log "Stage 6: significance between the evaluated variants (8 RVQ levels)"
  scores=$(ls exp/codec_*/eval/scores_dmcodec_*_nq8.csv 2>/dev/null || true)
  if [ "$(echo "${scores}" | wc -w)" -ge 2 ]; then
    dmtts eval significance --scores ${scores} --metric wer wil visqol stoi pesq sim --output-dir exp/significance
  else
    log "fewer than two evaluated variants; run stage 5 with other --variant values first"
  fi
fi

log "done: stages ${stage}..${stop_stage} (variant ${variant})"
