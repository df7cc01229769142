#!/usr/bin/env bash
# DM-Codec-TTS on Libri-Heavy (paper §3.4, §4): AR + NAR codec language models over DM-Codec
# codes, zero-shot synthesis on the LibriSpeech test-clean and VCTK evaluation subsets.
#
#   ./run.sh --librilight-dir /data/librilight --libriheavy-dir /data/libriheavy \
#            --librispeech-dir /data/LibriSpeech --vctk-dir /data/VCTK-Corpus-0.92 \
#            --codec-dir ../librispeech_codec/exp/codec_lm_sm/export
#   ./run.sh --stage 4 --stop-stage 5 --num-gpus 8      # only the training stages
#   ./run.sh --train-corpus libritts                     # DM-Codec-TTS-small (LibriTTS)
#   ./run.sh --num-nodes 2 --node-rank R --master-addr node0 --num-gpus 8   # on each of 2 nodes
#   ./run.sh --shar yes --stage 3 --stop-stage 5        # train from Lhotse Shar shards (any size)
#
# Stages:
#   0  manifests: Libri-Heavy (or LibriTTS), LibriSpeech test-clean, VCTK + the evaluation pairs
#   1  codec: use --codec-dir, or train one with ../librispeech_codec
#   2  tokenize the training/dev cuts with the codec (int16 codes, 8 levels)
#   3  phonemize (espeak-ng en-us) and build the symbol table; then, with Shar (--shar yes, or
#      auto and at least --shar-min-cuts training cuts: Libri-Heavy medium and large), export the
#      training cuts as Lhotse Shar shards (codes + phonemes) that stages 4-5 train from
#   4  train the AR model      (conf/ar.yaml:  280 s batches, ScaledAdam lr 0.05, 200 warm-up steps)
#   5  train the NAR model     (conf/nar.yaml: 200 s batches)
#   6  zero-shot synthesis of the evaluation pairs, then WER/WIL, speaker similarity and MOS proxy
#      (repetitions averaged, VALL-E protocol) and a report
# Finished steps leave markers in exp/.done and are skipped when the script runs again.
# Tokenization, training, synthesis and evaluation run on num_gpus processes per node x num_nodes
# nodes through torchrun (the offline stages sharded by cut, resumable with any world size); the
# other steps run on node 0 only. Multi-node: run this script on every node with its --node-rank;
# this directory (data/, exp/) must be on a filesystem shared by all nodes.
set -euo pipefail
cd "$(dirname "$0")"

stage=0
stop_stage=6
train_corpus=libriheavy      # libriheavy (paper) or libritts (DM-Codec-TTS-small)
libriheavy_dir=download/libriheavy   # the official libriheavy_cuts_*.jsonl.gz manifests
librilight_dir=download/librilight   # LibriLight audio the Libri-Heavy manifests point into
libriheavy_part=large        # training part: small | medium | large
libritts_dir=download/LibriTTS
librispeech_dir=download/LibriSpeech
vctk_dir=download/VCTK-Corpus-0.92
codec_dir=                   # exported DM-Codec; empty: train one with ../librispeech_codec (stage 1)
num_gpus=1                   # processes per node (GPUs; CPU: gloo processes); >1 or num_nodes>1: torchrun
num_nodes=1                  # nodes taking part (run this script on each, with its --node-rank)
node_rank=0                  # this node: 0 .. num_nodes-1 (node 0 runs the single-process steps)
master_addr=localhost        # host name / IP of node 0 (torchrun rendezvous)
master_port=29500            # free TCP port on node 0
num_jobs=8                   # parallel jobs for preparation / phonemization
tokenize_batch_duration=120  # seconds of audio per codec batch
asr=faster-whisper           # ASR for prompts without a transcript (e.g. VCTK crops)
repeats=3                    # syntheses per pair (VALL-E protocol: 3, results averaged)
seed=42
sim=resemblyzer              # speaker similarity (paper: wavlm:DIR of a local WavLM x-vector model)
mos=dnsmos                   # MOS proxy: dnsmos | utmos:FILE
shar=auto                    # train from Lhotse Shar shards: yes | no | auto (yes from shar_min_cuts cuts)
shar_min_cuts=1000000        # auto: Shar for a training split of at least this many cuts
help_message="DM-Codec-TTS recipe: manifests -> codec -> tokens -> phonemes -> AR -> NAR -> synthesis"

. ../../egs_tools/parse_options.sh
. ../../egs_tools/common.sh

done_dir=exp/.done
mkdir -p data exp

if [ "${train_corpus}" = libriheavy ]; then
  train_parts="${libriheavy_part} dev"
  train_name=libriheavy
  train_split=${libriheavy_part}
  dev_split=dev
elif [ "${train_corpus}" = libritts ]; then
  train_parts="train-clean-100 train-clean-360 train-other-500 dev-clean"
  train_name=libritts
  train_split=train
  dev_split=dev-clean
else
  log "--train-corpus must be libriheavy or libritts, got '${train_corpus}'"; exit 1
fi

if run_stage 0 && main_node && ! stage_done manifests; then
  log "Stage 0: manifests (${train_corpus}, LibriSpeech test-clean, VCTK) and evaluation pairs"
  if [ "${train_corpus}" = libriheavy ]; then
    dmtts prepare libriheavy --corpus-dir "${libriheavy_dir}" --audio-dir "${librilight_dir}" \
      --output-dir data --parts ${train_parts} --min-duration 0.5 --max-duration 15 --num-jobs "${num_jobs}"
  else
    dmtts prepare libritts --corpus-dir "${libritts_dir}" --output-dir data --parts ${train_parts} \
      --min-duration 0.5 --max-duration 15 --num-jobs "${num_jobs}"
    # one training manifest for the three LibriTTS training parts
    python -c "import sys; from lhotse import CutSet; CutSet.from_files(sys.argv[2:]).to_file(sys.argv[1])" \
      data/cuts/libritts_cuts_train.jsonl.gz data/cuts/libritts_cuts_train-{clean-100,clean-360,other-500}.jsonl.gz
  fi
  dmtts prepare librispeech --corpus-dir "${librispeech_dir}" --output-dir data --parts test-clean --num-jobs "${num_jobs}"
  dmtts prepare vctk --corpus-dir "${vctk_dir}" --output-dir data --num-jobs "${num_jobs}"
  # VALL-E protocol: 4-10 s test-clean targets, random 3 s prompt crop of another utterance
  dmtts subset librispeech-tts-eval --cuts data/cuts/librispeech_cuts_test-clean.jsonl.gz \
    --seed "${seed}" --out data/cuts/librispeech_tts_eval_pairs.jsonl.gz
  # SpeechTokenizer's VCTK protocol: 3 s prompt, text of a different utterance
  dmtts subset vctk-tts-eval --cuts data/cuts/vctk_cuts_all.jsonl.gz --seed "${seed}" \
    --out data/cuts/vctk_tts_eval_pairs.jsonl.gz
  mark_done manifests
fi

default_codec=../librispeech_codec/exp/codec_lm_sm/export   # what that recipe exports (LM+SM)
if run_stage 1 && [ -z "${codec_dir}" ] && ! stage_done codec; then
  log "Stage 1: no --codec-dir: training DM-Codec (LM+SM) with ../librispeech_codec"
  librispeech_abs=$(cd "${librispeech_dir}" && pwd)
  (cd ../librispeech_codec && ./run.sh --corpus-dir "${librispeech_abs}" --variant lm_sm --num-gpus "${num_gpus}" \
    --num-nodes "${num_nodes}" --node-rank "${node_rank}" --master-addr "${master_addr}" --master-port "${master_port}")
  mark_done codec
fi
trains_codec=false
run_stage 1 && [ -z "${codec_dir}" ] && trains_codec=true
codec_dir=${codec_dir:-${default_codec}}

if run_stage 2 && ! stage_done tokenize; then
  log "Stage 2: tokenize ${train_name} ${train_split}/${dev_split} with the codec in ${codec_dir}"
  ! run_stage 0 || wait_done manifests
  ! ${trains_codec} || wait_done codec
  for split in ${train_split} ${dev_split}; do
    dmtts_dist tokenize --codec "${codec_dir}" --cuts "data/cuts/${train_name}_cuts_${split}.jsonl.gz" \
      --output-dir data/tokens --batch-duration "${tokenize_batch_duration}"
  done
  mark_done tokenize
fi

if run_stage 3 && main_node && ! stage_done phonemize; then
  log "Stage 3: phonemize (espeak-ng en-us) and build data/tts/symbols.txt"
  # the training split first: its symbols get the first ids; dev only extends the table
  for split in ${train_split} ${dev_split}; do
    dmtts phonemize --cuts "data/tokens/${train_name}_cuts_${split}.jsonl.gz" \
      --out "data/tts/${train_name}_cuts_${split}.jsonl.gz" --symbols data/tts/symbols.txt --num-jobs "${num_jobs}"
  done
  mark_done phonemize
fi

shar_dir=data/shar/${train_name}_cuts_${train_split}
# Shard size for the Shar export, or 0 to train from the cuts file: at most 1000 cuts, and at
# least 4 shards per reader (ranks x DataLoader workers) so that every rank's epoch has the same
# length up to a shard (see the README, "Shar: training input at scale").
shar_plan() {  # shar_plan CUTS CONF
  python - "$1" "$2" "${shar}" "${shar_min_cuts}" "$((num_gpus * num_nodes))" <<'PY'
import gzip, sys, yaml
path, conf, mode, min_cuts, world = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
if mode not in ("yes", "no", "auto"):
    sys.exit(f"--shar must be yes, no or auto, got '{mode}'")
workers = max(int(yaml.safe_load(open(conf))["data"].get("num_workers", 1)), 1)
n = sum(1 for _ in gzip.open(path, "rb")) if mode != "no" else 0
print(max(1, min(1000, n // (4 * world * workers))) if mode == "yes" or (mode == "auto" and n >= min_cuts) else 0)
PY
}

if run_stage 3 && [ "${shar}" != no ] && ! stage_done shar; then
  ! run_stage 3 || wait_done phonemize
  shard_size=$(shar_plan "data/tts/${train_name}_cuts_${train_split}.jsonl.gz" conf/ar.yaml)
  if [ "${shard_size}" -gt 0 ]; then
    log "Stage 3: Lhotse Shar shards of the training cuts (codes + phonemes, ${shard_size} cuts each) -> ${shar_dir}"
    dmtts_dist shar export --cuts "data/tts/${train_name}_cuts_${train_split}.jsonl.gz" --output-dir "${shar_dir}" \
      --fields tts --shard-size "${shard_size}"
  else
    log "Stage 3: fewer than ${shar_min_cuts} training cuts: training reads the cuts file (--shar yes to export)"
  fi
  mark_done shar
fi

# conf/*.yaml point at data/tts/libriheavy_cuts_large.jsonl.gz; other corpora/parts override
# the paths in a generated copy (every other setting stays the paper's). With a Shar export
# (and --shar not no), training reads it instead of the cuts file, keeping partial batches.
make_conf() {  # make_conf ar|nar -> exp/conf_<model>.yaml
  use_shar=$([ "${shar}" != no ] && [ -f "${shar_dir}/shar_index.json" ] && echo 1 || echo 0)
  python - "$1" "${train_name}" "${train_split}" "${dev_split}" "${use_shar}" "${shar_dir}" <<'PY'
import os, sys, yaml
model, name, train, dev, use_shar, shar_dir = sys.argv[1:]
cfg = yaml.safe_load(open(f"conf/{model}.yaml"))
cfg["data"]["train_cuts"] = f"data/tts/{name}_cuts_{train}.jsonl.gz"
cfg["data"]["valid_cuts"] = f"data/tts/{name}_cuts_{dev}.jsonl.gz"
if use_shar == "1":
    cfg["data"]["train_cuts"] = shar_dir
    cfg["data"]["drop_last"] = False  # each worker samples its own shards: keep its partial batches
# every node writes the same file: atomically, so that no node reads a half-written one
tmp = f"exp/.conf_{model}.yaml.{os.getpid()}"
open(tmp, "w").write(yaml.safe_dump(cfg, sort_keys=False))
os.replace(tmp, f"exp/conf_{model}.yaml")
PY
}

for model in ar nar; do
  n=$([ ${model} = ar ] && echo 4 || echo 5)
  if run_stage ${n} && ! stage_done train_${model}; then
    log "Stage ${n}: train the ${model^^} model (exp/tts_${model}; resumes from its last checkpoint)"
    ! run_stage 3 || wait_done phonemize
    ! run_stage 3 || [ "${shar}" = no ] || wait_done shar
    make_conf ${model}
    resume=""
    ls exp/tts_${model}/checkpoints/step-*.pt >/dev/null 2>&1 && resume="--resume"
    dmtts_dist tts train --model ${model} --config exp/conf_${model}.yaml --exp-dir exp/tts_${model} ${resume}
    mark_done train_${model}
  fi
done

if run_stage 6 && ! stage_done synthesize; then
  log "Stage 6: zero-shot synthesis (${repeats} repeats) -> exp/synth/{librispeech,vctk}"
  ! run_stage 4 || wait_done train_ar   # node 0 exports the models after training
  ! run_stage 5 || wait_done train_nar
  for eval_set in librispeech vctk; do
    dmtts_dist synthesize --ar exp/tts_ar/export --nar exp/tts_nar/export --codec "${codec_dir}" \
      --pairs "data/cuts/${eval_set}_tts_eval_pairs.jsonl.gz" --output-dir "exp/synth/${eval_set}" \
      --repeats "${repeats}" --asr "${asr}" --seed "${seed}"
  done
  mark_done synthesize
fi

if run_stage 6 && ! stage_done evaluate; then
  log "Stage 6: evaluate the syntheses (WER/WIL, similarity to the prompt speaker, MOS proxy)"
  wait_done synthesize
  for eval_set in librispeech vctk; do
    dmtts_dist eval tts --synth-dir "exp/synth/${eval_set}" --pairs "data/cuts/${eval_set}_tts_eval_pairs.jsonl.gz" \
      --output-dir "exp/eval/${eval_set}" --name "dmcodec_tts_${eval_set}" --asr "${asr}" --sim "${sim}" --mos "${mos}"
    if main_node; then
      dmtts eval report --tts-eval "exp/eval/${eval_set}" --out "exp/report_${eval_set}.md"
    fi
  done
  mark_done evaluate
fi

log "Libri-Heavy TTS recipe finished (stages ${stage}..${stop_stage})."
