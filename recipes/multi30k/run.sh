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
#
# Options (environment variable names; defaults for --scale cpu):
#   SCALE=cpu            smoke (tiny, minutes; CI) | cpu (about an hour on 2 CPU cores, en-de) | full (GPU)
#   DATA_DIR=<repo>/../shared/data/multi30k   folder with {train,val,test_2016_flickr}.{en,de}.gz (or plain)
#   WORK=<repo>/runs/multi30k-$SCALE          output folder (everything the recipe writes)
#   DIRECTIONS=en-de     space-separated, e.g. "en-de de-en"
#   TEST_SET=test_2016_flickr   test split (test_2017_flickr also works); validation is "val"
#   TRAIN_LINES=0 VALID_LINES=0 TEST_LINES=0  use only the first N lines (0 = all)
#   SPM_VOCAB=4000  SPM_TYPE=unigram          joint sentencepiece vocabulary
#   TEACHER_ARCH=transformer  TEACHER_ARCH_ARGS="--encoder-layers 3 ..."   teacher model
#   STUDENT_ARCH=transformer  STUDENT_ARCH_ARGS="..."                      student model
#   TEACHER_LS=0.1       label smoothing of the LS teacher (the other teacher uses 0)
#   STUDENT_LS=0.1       label smoothing of every student's hard-label term
#   KD_ALPHA=0.5 KD_TEMPERATURE=1 KD_TOPK=4    word-level KD (weight of KD term, T, teacher top-k)
#   SEQKD_BEAM=1 (4 at other scales)        beam of the teachers' translations of the training set (lskd-distill-data)
#   SEQKD_BETA=1         sequence_distillation weight of the teacher's sequences (1: Kim & Rush;
#                        STUDENT_LS then only smooths the gold term, which has weight 1-beta)
#   LR=1e-3 WARMUP=1000 DROPOUT=0.1 WEIGHT_DECAY=0.0001 MAX_TOKENS=4096
#   MAX_UPDATE_TEACHER=... MAX_UPDATE_STUDENT=...   training length in updates
#   MAX_TRAIN_HOURS_TEACHER=0.17 MAX_TRAIN_HOURS_STUDENT=0.09   per-model wall-clock cap (fairseq
#                        --stop-time-hours; 0 = none): on a busy machine a model may stop before
#                        MAX_UPDATE_*; the table's "updates" column shows how far each got
#   BEAM=5 LENPEN=1.0 GEN_MAX_TOKENS=8000     test decoding
#   MAX_LEN_A=1.2 MAX_LEN_B=10                output length limit a*source+b (test and distillation)
#   EVAL_CHECKPOINT=checkpoint_best.pt        which checkpoint is evaluated and used as teacher
#   DEVICE=auto          auto | cpu | cuda   (cuda: fp16 unless FP16=no, all visible GPUs)
#   FP16=auto  SEED=1  FORCE=0 (1: rerun steps that are done)  STAGE=1 STOP_STAGE=10
#   EXTRA_TRAIN_ARGS=""  appended to every fairseq-train call
#
# Example: bash recipes/multi30k/run.sh --scale smoke --work /tmp/m30k-smoke
set -euo pipefail
. "$(dirname "$0")/../common.sh"
LSKD_RECIPE=multi30k
LSKD_STAGES="prepare spm binarize teacher_ls teacher_nols student_nokd student_wordkd distill student_seqkd evaluate"
LSKD_OPTIONS="SCALE DATA_DIR WORK DIRECTIONS TEST_SET TRAIN_LINES VALID_LINES TEST_LINES SPM_VOCAB SPM_TYPE
 TEACHER_ARCH TEACHER_ARCH_ARGS STUDENT_ARCH STUDENT_ARCH_ARGS TEACHER_LS STUDENT_LS KD_ALPHA KD_TEMPERATURE KD_TOPK
 SEQKD_BEAM SEQKD_BETA LR WARMUP DROPOUT WEIGHT_DECAY MAX_TOKENS MAX_UPDATE_TEACHER MAX_UPDATE_STUDENT MAX_TRAIN_HOURS_TEACHER MAX_TRAIN_HOURS_STUDENT BEAM LENPEN
 GEN_MAX_TOKENS MAX_LEN_A MAX_LEN_B EVAL_CHECKPOINT DEVICE FP16 SEED FORCE STAGE STOP_STAGE EXTRA_TRAIN_ARGS"
LSKD_OPTIONS="$(echo $LSKD_OPTIONS)"
lskd_parse_args "$@"

: "${SCALE:=cpu}"
case "$SCALE" in
    smoke)
        : "${TRAIN_LINES:=400}" "${VALID_LINES:=60}" "${TEST_LINES:=60}" "${SPM_VOCAB:=400}"
        : "${TEACHER_ARCH_ARGS:=--encoder-layers 1 --decoder-layers 1 --encoder-embed-dim 32 --decoder-embed-dim 32 --encoder-ffn-embed-dim 64 --decoder-ffn-embed-dim 64 --encoder-attention-heads 2 --decoder-attention-heads 2}"
        : "${STUDENT_ARCH_ARGS:=--encoder-layers 1 --decoder-layers 1 --encoder-embed-dim 16 --decoder-embed-dim 16 --encoder-ffn-embed-dim 32 --decoder-ffn-embed-dim 32 --encoder-attention-heads 2 --decoder-attention-heads 2}"
        : "${MAX_UPDATE_TEACHER:=12}" "${MAX_UPDATE_STUDENT:=8}" "${WARMUP:=5}" "${MAX_TOKENS:=2000}"
        : "${BEAM:=2}" "${SEQKD_BEAM:=1}" ;;
    cpu)
        : "${SPM_VOCAB:=4000}"
        : "${TEACHER_ARCH_ARGS:=--encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 256 --decoder-embed-dim 256 --encoder-ffn-embed-dim 512 --decoder-ffn-embed-dim 512 --encoder-attention-heads 4 --decoder-attention-heads 4}"
        : "${STUDENT_ARCH_ARGS:=--encoder-layers 2 --decoder-layers 2 --encoder-embed-dim 128 --decoder-embed-dim 128 --encoder-ffn-embed-dim 256 --decoder-ffn-embed-dim 256 --encoder-attention-heads 4 --decoder-attention-heads 4}"
        : "${MAX_UPDATE_TEACHER:=1200}" "${MAX_UPDATE_STUDENT:=800}" "${WARMUP:=400}" "${SEQKD_BEAM:=1}"
        : "${MAX_TRAIN_HOURS_TEACHER:=0.17}" "${MAX_TRAIN_HOURS_STUDENT:=0.09}" ;;
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
: "${TRAIN_LINES:=0}" "${VALID_LINES:=0}" "${TEST_LINES:=0}" "${SPM_TYPE:=unigram}"
: "${TEACHER_ARCH:=transformer}" "${STUDENT_ARCH:=transformer}"
: "${TEACHER_LS:=0.1}" "${STUDENT_LS:=0.1}" "${KD_ALPHA:=0.5}" "${KD_TEMPERATURE:=1}" "${KD_TOPK:=4}"
: "${SEQKD_BEAM:=4}" "${SEQKD_BETA:=1}" "${LR:=1e-3}" "${DROPOUT:=0.1}" "${WEIGHT_DECAY:=0.0001}" "${MAX_TOKENS:=4096}"
: "${MAX_TRAIN_HOURS_TEACHER:=0}" "${MAX_TRAIN_HOURS_STUDENT:=0}" "${BEAM:=5}" "${LENPEN:=1.0}" "${GEN_MAX_TOKENS:=8000}" "${MAX_LEN_A:=1.2}" "${MAX_LEN_B:=10}"
: "${EVAL_CHECKPOINT:=checkpoint_best.pt}" "${DEVICE:=auto}" "${FP16:=auto}" "${SEED:=1}" "${FORCE:=0}"
: "${STAGE:=1}" "${STOP_STAGE:=evaluate}" "${EXTRA_TRAIN_ARGS:=}"

mkdir -p "$WORK/logs"
WORK="$(cd "$WORK" && pwd)"
lskd_log "scale=$SCALE work=$WORK directions='$DIRECTIONS' data=$DATA_DIR"
lskd_detect_device
RAW="$WORK/raw" SPM="$WORK/spm"
LANGS="en de"

# ----------------------------------------------------------------- helpers
find_split() {  # find_split SPLIT LANG -> path of the .gz or plain file
    local f
    for f in "$DATA_DIR/$1.$2.gz" "$DATA_DIR/$1.$2"; do
        if [ -f "$f" ]; then echo "$f"; return 0; fi
    done
    lskd_die "missing $DATA_DIR/$1.$2[.gz] (Multi30k task 1 raw text; see recipes/multi30k/README.md)"
}

take_lines() {  # take_lines SRC N DST: first N lines (all if 0), decompressing .gz
    local src="$1" n="$2" dst="$3"
    # awk reads everything (no SIGPIPE under pipefail, unlike head)
    { if [[ "$src" == *.gz ]]; then zcat "$src"; else cat "$src"; fi; } |
        awk -v n="$n" 'n == 0 || NR <= n' > "$dst.tmp"
    mv "$dst.tmp" "$dst"
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

do_spm() {
    mkdir -p "$SPM"
    python -m lskd_fairseq.cli.spm train --input "$RAW/train.en" "$RAW/train.de" \
        --model-prefix "$SPM/spm" --vocab-size "$SPM_VOCAB" --model-type "$SPM_TYPE"
    local s l ins=() outs=()
    for s in train valid test; do for l in $LANGS; do ins+=("$RAW/$s.$l"); outs+=("$SPM/$s.$l"); done; done
    python -m lskd_fairseq.cli.spm encode --model "$SPM/spm.model" --input "${ins[@]}" --output "${outs[@]}"
}

do_binarize() {  # do_binarize SRC TGT DIR
    local src="$1" tgt="$2" dir="$3"
    rm -rf "$dir/bin.tmp"
    fairseq-preprocess --source-lang "$src" --target-lang "$tgt" --joined-dictionary \
        --trainpref "$SPM/train" --validpref "$SPM/valid" --testpref "$SPM/test" \
        --destdir "$dir/bin.tmp" --workers 2
    rm -rf "$dir/bin"; mv "$dir/bin.tmp" "$dir/bin"
}

common_train_args() {  # common_train_args MAX_UPDATE MAX_HOURS
    echo --optimizer adam --adam-betas "(0.9,0.98)" --lr "$LR" --lr-scheduler inverse_sqrt \
        --warmup-updates "$WARMUP" --warmup-init-lr 1e-07 --dropout "$DROPOUT" --weight-decay "$WEIGHT_DECAY" \
        --max-tokens "$MAX_TOKENS" --max-update "$1" --share-all-embeddings \
        --best-checkpoint-metric nll_loss --log-interval 50 --stop-time-hours "$2" $EXTRA_TRAIN_ARGS
}

train_teacher() {  # train_teacher DIR NAME LS
    local dir="$1" name="$2" ls="$3"
    # shellcheck disable=SC2046,SC2086
    lskd_train "$dir/models/$name" "$dir/bin" --arch "$TEACHER_ARCH" $TEACHER_ARCH_ARGS \
        --criterion label_smoothed_cross_entropy --label-smoothing "$ls" \
        $(common_train_args "$MAX_UPDATE_TEACHER" "$MAX_TRAIN_HOURS_TEACHER")
}

train_student() {  # train_student DIR NAME DATA_BIN [TEACHER_CKPT]
    local dir="$1" name="$2" data="$3" teacher="${4:-}" kd
    if [ -n "$teacher" ]; then
        kd=(--task translation_kd --teacher-path "$teacher" --kd-alpha "$KD_ALPHA"
            --kd-temperature "$KD_TEMPERATURE" --kd-topk "$KD_TOPK")
    else
        kd=(--kd-alpha 0)
    fi
    # shellcheck disable=SC2046,SC2086
    lskd_train "$dir/models/$name" "$data" --arch "$STUDENT_ARCH" $STUDENT_ARCH_ARGS \
        --criterion label_smoothed_kd --label-smoothing "$STUDENT_LS" "${kd[@]}" \
        $(common_train_args "$MAX_UPDATE_STUDENT" "$MAX_TRAIN_HOURS_STUDENT")
}

do_distill() {  # do_distill SRC TGT DIR TEACHER: teacher beam outputs on train -> DIR/distill_TEACHER
    local src="$1" tgt="$2" dir="$3" teacher="$4"
    # lskd-distill-data: hypotheses in sample-id order, original sources, the teacher's dictionaries
    # shellcheck disable=SC2086
    lskd-distill-data "$dir/bin" --out "$dir/distill_$teacher" --split train \
        --teacher-path "$dir/models/$teacher/$EVAL_CHECKPOINT" -s "$src" -t "$tgt" \
        --source-text "$SPM/train.$src" --target-text "$SPM/train.$tgt" \
        --beam "$SEQKD_BEAM" --max-tokens "$GEN_MAX_TOKENS" --max-len-a "$MAX_LEN_A" --max-len-b "$MAX_LEN_B" \
        --no-progress-bar $LSKD_GEN_DEVICE_ARGS
}

train_student_seqkd() {  # train_student_seqkd DIR NAME TEACHER: Kim & Rush sequence-level KD
    local dir="$1" name="$2" teacher="$3"
    # shellcheck disable=SC2046,SC2086
    lskd_train "$dir/models/$name" "$dir/bin" --arch "$STUDENT_ARCH" $STUDENT_ARCH_ARGS \
        --task translation_kd --distilled-data "$dir/distill_$teacher" \
        --criterion sequence_distillation --seq-kd-beta "$SEQKD_BETA" --kd-alpha 0 --label-smoothing "$STUDENT_LS" \
        $(common_train_args "$MAX_UPDATE_STUDENT" "$MAX_TRAIN_HOURS_STUDENT")
}

evaluate_all() {  # evaluate_all TGT DIR: every model, one process; results/<name>.json per model
    local tgt="$1" dir="$2" m name teacher kd ls i=0 models=() metas=()
    for m in "${MODELS[@]}"; do
        IFS='|' read -r name teacher kd ls <<< "$m"
        i=$((i + 1))
        models+=(--model "$name=$dir/models/$name/$EVAL_CHECKPOINT")
        metas+=(--model-meta "$name:order=$i" --model-meta "$name:teacher=$teacher"
                --model-meta "$name:kd=$kd" --model-meta "$name:label_smoothing=$ls")
    done
    local force=()
    if [ "$FORCE" = 1 ]; then force=(--force); fi
    # shellcheck disable=SC2086
    python -m lskd_fairseq.cli.evaluate "$dir/bin" --subset test --ref "$RAW/test.$tgt" --spm "$SPM/spm.model" \
        --results-dir "$dir/results" --gen-dir "$dir/gen" --user-dir "$LSKD_USER_DIR" "${models[@]}" "${metas[@]}" \
        "${force[@]}" --meta "direction=$DIR_NAME" "scale=$SCALE" "test_set=$TEST_SET" "beam=$BEAM" -- \
        --beam "$BEAM" --lenpen "$LENPEN" --max-tokens "$GEN_MAX_TOKENS" --max-len-a "$MAX_LEN_A" \
        --max-len-b "$MAX_LEN_B" $LSKD_GEN_DEVICE_ARGS $LSKD_BATCH_FIX
    lskd-bleu table "$dir/results" --out "$dir/results/table.md" \
        --title "Multi30k $SRC→$TGT ($TEST_SET, scale $SCALE)"
}

# (name, teacher, kd, ls) of every model, in table order; with SEQKD_BETA=1 a Seq-KD
# student's loss is the unsmoothed NLL of the teacher's sequences
if [ "$SEQKD_BETA" = 1 ]; then SEQKD_LS=0; else SEQKD_LS="$STUDENT_LS (gold term)"; fi
MODELS=(
    "teacher_ls|–|–|$TEACHER_LS"
    "teacher_nols|–|–|0"
    "student_nokd|–|none|$STUDENT_LS"
    "student_wordkd_ls|teacher_ls|word top-$KD_TOPK T=$KD_TEMPERATURE|$STUDENT_LS"
    "student_wordkd_nols|teacher_nols|word top-$KD_TOPK T=$KD_TEMPERATURE|$STUDENT_LS"
    "student_seqkd_ls|teacher_ls|sequence beam $SEQKD_BEAM|$SEQKD_LS"
    "student_seqkd_nols|teacher_nols|sequence beam $SEQKD_BEAM|$SEQKD_LS"
)

# ----------------------------------------------------------------- stages
if lskd_stage prepare; then lskd_step prepare do_prepare; fi
if lskd_stage spm; then lskd_step spm do_spm; fi

for DIR_NAME in $DIRECTIONS; do
    SRC="${DIR_NAME%-*}" TGT="${DIR_NAME#*-}"
    case "$SRC-$TGT" in en-de|de-en) ;; *) lskd_die "DIRECTIONS: en-de or de-en, got $DIR_NAME" ;; esac
    D="$WORK/$SRC-$TGT"
    mkdir -p "$D"
    T_LS="$D/models/teacher_ls/$EVAL_CHECKPOINT" T_NOLS="$D/models/teacher_nols/$EVAL_CHECKPOINT"
    if lskd_stage binarize; then lskd_step "$DIR_NAME.binarize" do_binarize "$SRC" "$TGT" "$D"; fi
    if lskd_stage teacher_ls; then lskd_step "$DIR_NAME.teacher_ls" train_teacher "$D" teacher_ls "$TEACHER_LS"; fi
    if lskd_stage teacher_nols; then lskd_step "$DIR_NAME.teacher_nols" train_teacher "$D" teacher_nols 0; fi
    if lskd_stage student_nokd; then lskd_step "$DIR_NAME.student_nokd" train_student "$D" student_nokd "$D/bin"; fi
    if lskd_stage student_wordkd; then
        lskd_step "$DIR_NAME.student_wordkd_ls" train_student "$D" student_wordkd_ls "$D/bin" "$T_LS"
        lskd_step "$DIR_NAME.student_wordkd_nols" train_student "$D" student_wordkd_nols "$D/bin" "$T_NOLS"
    fi
    if lskd_stage distill; then
        lskd_step "$DIR_NAME.distill_teacher_ls" do_distill "$SRC" "$TGT" "$D" teacher_ls
        lskd_step "$DIR_NAME.distill_teacher_nols" do_distill "$SRC" "$TGT" "$D" teacher_nols
    fi
    if lskd_stage student_seqkd; then
        lskd_step "$DIR_NAME.student_seqkd_ls" train_student_seqkd "$D" student_seqkd_ls teacher_ls
        lskd_step "$DIR_NAME.student_seqkd_nols" train_student_seqkd "$D" student_seqkd_nols teacher_nols
    fi
    if lskd_stage evaluate; then
        rm -f "$WORK/.done/$DIR_NAME.evaluate"   # per-model results are skipped by the evaluator itself
        lskd_step "$DIR_NAME.evaluate" evaluate_all "$TGT" "$D"
    fi
done

if [ "$(lskd_stage_index evaluate)" -ge "$(lskd_stage_index "$STAGE")" ] &&
   [ "$(lskd_stage_index evaluate)" -le "$(lskd_stage_index "$STOP_STAGE")" ]; then
    tables=()
    for DIR_NAME in $DIRECTIONS; do tables+=("$WORK/$DIR_NAME/results/table.md"); done
    { for t in "${tables[@]}"; do cat "$t"; echo; done; } > "$WORK/table.md.tmp"
    mv "$WORK/table.md.tmp" "$WORK/table.md"
    lskd_log "table: $WORK/table.md"
    cat "$WORK/table.md"
fi
