#!/usr/bin/env bash
# Multi30k En<->De: teachers with and without label smoothing, and students
# distilled from each (Shen et al., ICLR 2021, NMT comparison), scored by sacreBLEU.
#
# Usage:  bash recipes/multi30k/run.sh [--scale smoke|cpu|full] [--option VALUE ...]
# Every option is also an environment variable: --max-update-teacher 3000 is
# MAX_UPDATE_TEACHER=3000. Defaults depend on --scale (shown for cpu).
#
# Stages (--stage / --stop-stage take a name or number; finished work is skipped):
#   1 prepare      raw text from DATA_DIR (*.gz) -> WORK/raw/{train,valid,test}.{en,de}
#   2 spm          joint sentencepiece model trained on the training split; encode all splits
#   3 binarize     fairseq-preprocess --joined-dictionary, per direction
#   4 teacher_ls   teacher trained with label smoothing TEACHER_LS (0.1)
#   5 teacher_nols teacher trained without label smoothing
#   6 student_nokd student, no KD (label-smoothed NLL on the references only)
#   7 student_wordkd  students with word-level top-k KD (Tan et al. 2019) from each teacher, T=1
#   8 distill      each teacher translates the training set (beam SEQKD_BEAM) with lskd-distill-data:
#                  WORK/<dir>/distill_<teacher> (sample-id order, original sources)
#   9 student_seqkd   students trained on each teacher's translations (Kim & Rush 2016):
#                  --task translation_kd --distilled-data ... --criterion sequence_distillation
#  10 evaluate     translate the test set (one process, lskd_fairseq.cli.evaluate), remove sentencepiece,
#                  sacreBLEU BLEU+chrF with signatures -> WORK/<dir>/results/<model>.json,
#                  WORK/<dir>/results/table.md, and WORK/table.md (all directions)
#  11 temperature_sweep  word-level KD students of each teacher at every T in KD_SWEEP_TEMPERATURES
#                  other than KD_TEMPERATURE (student_wordkd_{ls,nols}_T<t>), scored and added to the
#                  tables; nothing to do when KD_SWEEP_TEMPERATURES is empty (the default)
#  12 teacher_cache  each teacher's top-KD_TOPK tokens and logits on the gold train/valid targets
#                  (lskd-teacher-cache) -> WORK/<dir>/teacher_cache/<teacher>; made by stages 7 and 11
#                  too when TEACHER_CACHE=1, and then their word-KD students read it instead of
#                  running the teacher (same loss, teacher-free students)
#
# Scales: smoke = first 400/60/60 train/val/test lines, 1-layer models (dims 32 teacher, 16 student),
#   100/8 updates (teacher lr 3e-3), beam 2: plumbing (CI); the teachers learn a little. cpu = all 29k pairs; teachers 3+3 layers d=128 ffn 512,
#   dropout 0.2, batches of 2048 tokens, lr 1.5e-3 after 800 warm-up updates, trained until the
#   validation BLEU (greedy) has not improved for 5 epochs (at most 12000 updates); students 2+2 layers
#   d=64 ffn 256, batches of 1024 tokens, warm-up 100, exactly 1000 updates each; greedy
#   distillation. full = GPU: transformer_iwslt_de_en teacher, 3+3 layer d=256 student, 15k
#   updates each, both directions, dropout 0.3, lr 5e-4, beam-4 distillation.
#
# Options (environment variable names; defaults for --scale cpu):
#   SCALE=cpu            smoke (tiny, minutes; CI) | cpu (2 CPU cores, en-de; see "Scales") | full (GPU)
#   DATA_DIR=<repo>/../shared/data/multi30k   folder with {train,val,test_2016_flickr}.{en,de}.gz (or plain)
#   WORK=<repo>/runs/multi30k-$SCALE          output folder (everything the recipe writes)
#   DIRECTIONS=en-de     space-separated, e.g. "en-de de-en"
#   TEST_SET=test_2016_flickr   test split (test_2017_flickr also works); validation is "val"
#   TRAIN_LINES=0 VALID_LINES=0 TEST_LINES=0  use only the first N lines (0 = all)
#   SPM_VOCAB=4000  SPM_TYPE=unigram  SPM_SENTENCES=0   joint sentencepiece vocabulary, trained on
#                        the training split (SPM_SENTENCES > 0: on a random sample of that many lines)
#   TEACHER_ARCH=transformer  TEACHER_ARCH_ARGS="--encoder-layers 3 ..."   teacher model
#   STUDENT_ARCH=transformer  STUDENT_ARCH_ARGS="..."                      student model
#   TEACHER_LS=0.1       label smoothing of the LS teacher (the other teacher uses 0)
#   STUDENT_LS=0.1       label smoothing of every student's hard-label term
#   KD_ALPHA=0.5 KD_TEMPERATURE=1 KD_TOPK=4    word-level KD (weight of KD term, T, teacher top-k)
#   KD_SWEEP_TEMPERATURES=""  e.g. "2 4": stage 11 trains word-KD students of both teachers at these T
#   TEACHER_CACHE=0      1: word-KD students read the teachers' caches (stage 12) instead of running them
#   SEQKD_BEAM=1 (4 at other scales)        beam of the teachers' translations of the training set (lskd-distill-data)
#   SEQKD_BETA=1         sequence_distillation weight of the teacher's sequences (1: Kim & Rush;
#                        STUDENT_LS then only smooths the gold term, which has weight 1-beta)
#   LR=1e-3 WARMUP=100 DROPOUT=0.1 WEIGHT_DECAY=0.0001 MAX_TOKENS=1024 UPDATE_FREQ=1
#                        Adam (0.9, 0.98), inverse-sqrt schedule, shared embeddings
#   LR_TEACHER=1.5e-3 WARMUP_TEACHER=800 DROPOUT_TEACHER=0.2 MAX_TOKENS_TEACHER=2048
#                        the teachers' own values of these (default: the shared ones above)
#   MAX_UPDATE_TEACHER=12000 MAX_UPDATE_STUDENT=1000   training length in updates (a teacher's: a cap)
#   PATIENCE_TEACHER=5   stop a teacher when STOP_METRIC_TEACHER on the validation set has not
#                        improved for this many epochs (0 = train to MAX_UPDATE_TEACHER)
#   STOP_METRIC_TEACHER=bleu   bleu (greedy validation BLEU, scored as the test set) | nll_loss | loss;
#                        also picks the teacher's checkpoint_best.pt. Students always train exactly
#                        MAX_UPDATE_STUDENT updates and keep their lowest validation NLL as best
#   MAX_TRAIN_HOURS_TEACHER=0 MAX_TRAIN_HOURS_STUDENT=0   per-model wall-clock cap (fairseq
#                        --stop-time-hours; 0 = none): on a busy machine a model may stop before
#                        MAX_UPDATE_*; the table's "updates" column shows how far each got
#   BEAM=5 LENPEN=1.0 GEN_MAX_TOKENS=8000     test decoding
#   MAX_LEN_A=1.2 MAX_LEN_B=10                output length limit a*source+b (test and distillation)
#   EVAL_CHECKPOINT=checkpoint_best.pt        which checkpoint is evaluated and used as teacher
#   SEQKD_EVAL_CHECKPOINT=checkpoint_last.pt  which checkpoint of a Seq-KD student is evaluated: its NLL
#                        on the gold validation references (what checkpoint_best minimises) rises while it
#                        learns the teacher's outputs, so checkpoint_best would keep its first epoch
#   DEVICE=auto          auto | cpu | cuda   (cuda: fp16 unless FP16=no, all visible GPUs)
#   SEED=1               the students' seed (initialisation, data order, dropout). Seed 1 gives the
#                        plain names (student_nokd, ...); any other seed N trains and scores its own
#                        students, student_nokd_sN, student_wordkd_ls_sN, ... (steps en-de.<name>, step
#                        en-de.evaluate_sN), beside the same teachers and distilled data, so several
#                        seeds share one WORK: students of both teachers with one seed are paired
#   TEACHER_SEED=1       the teachers' seed (trained once, whatever SEED is)
#   FP16=auto  STAGE=1 STOP_STAGE=11
#   BF16=auto            auto | yes | no: bfloat16 training (fairseq --bf16) and bf16 teachers in
#                        lskd-distill-data / lskd-teacher-cache; auto: on a CPU with bf16 hardware
#                        (AMX), never on CUDA (fp16 stays there); yes on CUDA replaces fp16
#   FORCE=0   1: rerun steps that are done (a training resumes from its checkpoint_last.pt and so
#             stops at once if it had finished: delete WORK/<dir>/models/<name> to retrain)
#   EXTRA_TRAIN_ARGS=""  appended to every fairseq-train call;  WORKERS=2  fairseq-preprocess workers
#
# Example: bash recipes/multi30k/run.sh --scale smoke --work /tmp/m30k-smoke
set -euo pipefail
. "$(dirname "$0")/../common.sh"
LSKD_RECIPE=multi30k
LSKD_TITLE=Multi30k
LSKD_STAGES="$LSKD_NMT_STAGES"
LSKD_OPTIONS="$(echo $LSKD_NMT_OPTIONS TRAIN_LINES VALID_LINES TEST_LINES)"
lskd_parse_args "$@"

: "${SCALE:=cpu}"
case "$SCALE" in
    smoke)
        : "${TRAIN_LINES:=400}" "${VALID_LINES:=60}" "${TEST_LINES:=60}" "${SPM_VOCAB:=400}"
        : "${TEACHER_ARCH_ARGS:=--encoder-layers 1 --decoder-layers 1 --encoder-embed-dim 32 --decoder-embed-dim 32 --encoder-ffn-embed-dim 64 --decoder-ffn-embed-dim 64 --encoder-attention-heads 2 --decoder-attention-heads 2}"
        : "${STUDENT_ARCH_ARGS:=--encoder-layers 1 --decoder-layers 1 --encoder-embed-dim 16 --decoder-embed-dim 16 --encoder-ffn-embed-dim 32 --decoder-ffn-embed-dim 32 --encoder-attention-heads 2 --decoder-attention-heads 2}"
        : "${MAX_UPDATE_STUDENT:=8}" "${WARMUP:=5}" "${MAX_TOKENS:=2000}"
        # teachers: enough updates (10 epochs of 400 lines) to translate better than an untrained
        # model, which the recipe test checks (measured: 0.92 BLEU / 7.6 chrF against 0.00 / 5.0);
        # validation NLL, no patience, so no decoding during training
        : "${MAX_UPDATE_TEACHER:=100}" "${LR_TEACHER:=3e-3}" "${WARMUP_TEACHER:=10}"
        : "${STOP_METRIC_TEACHER:=nll_loss}" "${PATIENCE_TEACHER:=0}"
        : "${BEAM:=2}" "${SEQKD_BEAM:=1}" ;;
    cpu)
        : "${SPM_VOCAB:=4000}" "${MAX_TOKENS:=1024}" "${WARMUP:=100}"
        : "${TEACHER_ARCH_ARGS:=--encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 128 --decoder-embed-dim 128 --encoder-ffn-embed-dim 512 --decoder-ffn-embed-dim 512 --encoder-attention-heads 4 --decoder-attention-heads 4}"
        : "${STUDENT_ARCH_ARGS:=--encoder-layers 2 --decoder-layers 2 --encoder-embed-dim 64 --decoder-embed-dim 64 --encoder-ffn-embed-dim 256 --decoder-ffn-embed-dim 256 --encoder-attention-heads 4 --decoder-attention-heads 4}"
        # teachers train until validation BLEU (greedy) has not improved for 5 epochs, at most
        # 12000 updates of 2048 tokens (~47 epochs); inverse-sqrt decay after 800 warm-up updates
        : "${MAX_UPDATE_TEACHER:=12000}" "${PATIENCE_TEACHER:=5}" "${STOP_METRIC_TEACHER:=bleu}"
        : "${MAX_TOKENS_TEACHER:=2048}" "${LR_TEACHER:=1.5e-3}" "${WARMUP_TEACHER:=800}" "${DROPOUT_TEACHER:=0.2}"
        # students: a fixed number of updates, no early stopping and no wall-clock cap, so every
        # student of a comparison trains equally long
        : "${MAX_UPDATE_STUDENT:=1000}" "${SEQKD_BEAM:=1}" ;;
    full)
        : "${SPM_VOCAB:=8000}" "${TEACHER_ARCH:=transformer_iwslt_de_en}" "${DIRECTIONS:=en-de de-en}" "${DROPOUT:=0.3}"
        : "${TEACHER_ARCH_ARGS:=}"
        : "${STUDENT_ARCH_ARGS:=--encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 256 --decoder-embed-dim 256 --encoder-ffn-embed-dim 1024 --decoder-ffn-embed-dim 1024 --encoder-attention-heads 4 --decoder-attention-heads 4}"
        : "${MAX_UPDATE_TEACHER:=15000}" "${MAX_UPDATE_STUDENT:=15000}" "${WARMUP:=4000}" "${LR:=5e-4}" ;;
    *) lskd_die "--scale must be smoke, cpu or full (got $SCALE)" ;;
esac
: "${DATA_DIR:=$LSKD_REPO/../shared/data/multi30k}"
: "${WORK:=$LSKD_REPO/runs/multi30k-$SCALE}"
: "${DIRECTIONS:=en-de}" "${TEST_SET:=test_2016_flickr}"
: "${TRAIN_LINES:=0}" "${VALID_LINES:=0}" "${TEST_LINES:=0}"
lskd_nmt_defaults
LANGS="en de"
lskd_nmt_setup

find_split() {  # find_split SPLIT LANG -> path of the .gz or plain file
    local f
    for f in "$DATA_DIR/$1.$2.gz" "$DATA_DIR/$1.$2"; do
        if [ -f "$f" ]; then echo "$f"; return 0; fi
    done
    lskd_die "missing $DATA_DIR/$1.$2[.gz] (Multi30k task 1 raw text; see recipes/multi30k/README.md)"
}

do_prepare() {
    mkdir -p "$RAW"
    local l
    for l in $LANGS; do
        take_lines "$(find_split train "$l")" "$TRAIN_LINES" "$RAW/train.$l"
        take_lines "$(find_split val "$l")" "$VALID_LINES" "$RAW/valid.$l"
        take_lines "$(find_split "$TEST_SET" "$l")" "$TEST_LINES" "$RAW/test.$l"
    done
    wc -l "$RAW"/*
}

lskd_nmt_main
