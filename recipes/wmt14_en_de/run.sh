#!/usr/bin/env bash
# WMT14 English->German: Transformer base (or big) teachers trained with and without
# label smoothing, smaller students without KD, with top-k word-level KD at T=1 and with
# sequence-level KD from each teacher; joint sentencepiece vocabulary; newstest2013 for
# validation, newstest2014 for test; detokenized sacreBLEU (BLEU and chrF).
#
# Usage:  bash recipes/wmt14_en_de/run.sh --data-dir /path/to/wmt14 [--scale base|big] [--option VALUE ...]
# Every option is also an environment variable (--max-update-teacher 100000 is
# MAX_UPDATE_TEACHER=100000). Defaults are for --scale base (GPUs).
#
# Data (not downloadable on machines without internet; nothing is fetched unless DOWNLOAD=1):
#   training: the WMT14 En-De parallel corpora of https://www.statmt.org/wmt14/translation-task.html
#     training-parallel-europarl-v7.tgz  -> training/europarl-v7.de-en.{de,en}
#     training-parallel-commoncrawl.tgz  -> commoncrawl.de-en.{de,en}
#     training-parallel-nc-v9.tgz        -> training/news-commentary-v9.de-en.{de,en}
#   extracted into DATA_DIR (the layout fairseq's prepare-wmt14en2de.sh uses; ~4.5M pairs).
#   TRAIN_CORPORA lists the corpus prefixes (paths without .de/.en; .gz files work too).
#   validation: newstest2013.{de,en} plain text (dev.tgz of the WMT14 page: dev/newstest2013.*);
#     VALID_PREFIX (default DATA_DIR/dev/newstest2013).
#   test: newstest2014, by default the project's copy ../shared/data/wmt14/newstest2014.{en,de}.gz
#     (TEST_PREFIX), the full 3,003-line test set, as sacreBLEU's wmt14/full.
#   DOWNLOAD=1 fetches the three training archives and dev.tgz into DATA_DIR when the
#   network is there.
#
# Stages (--stage / --stop-stage take a name or number; finished work is skipped):
#   1 prepare (concatenate and clean the corpora: CLEAN_MIN..CLEAN_MAX words, ratio CLEAN_RATIO)
#   2 spm  3 binarize  4 teacher_ls  5 teacher_nols  6 student_nokd  7 student_wordkd
#   8 distill  9 student_seqkd  10 evaluate  11 temperature_sweep (KD_SWEEP_TEMPERATURES)    (see recipes/multi30k/run.sh)
#
# Options (environment variable names; defaults for --scale base):
#   SCALE=base           base: transformer_wmt_en_de teachers | big: transformer_vaswani_wmt_en_de_big
#                        teachers (dropout 0.3, lr 5e-4) | cpu: 200k-pair subset, small models (plumbing)
#   DATA_DIR=            folder with the extracted corpora (see above)
#   TRAIN_CORPORA="DATA_DIR/training/europarl-v7.de-en DATA_DIR/commoncrawl.de-en DATA_DIR/training/news-commentary-v9.de-en"
#   VALID_PREFIX=DATA_DIR/dev/newstest2013   TEST_PREFIX=<repo>/../shared/data/wmt14/newstest2014
#   DOWNLOAD=0  WMT_URLS="..."(statmt.org URLs of the archives)
#   WORK=<repo>/runs/wmt14_en_de-$SCALE   DIRECTIONS=en-de   TEST_SET=newstest2014 (a label)
#   TRAIN_LINES=0        keep only the first N cleaned training pairs, after shuffling with TEACHER_SEED (0 = all)
#   CLEAN_MIN=1 CLEAN_MAX=250 CLEAN_RATIO=1.5
#   SPM_VOCAB=32000 SPM_TYPE=unigram SPM_SENTENCES=10000000   joint sentencepiece model (sampled lines)
#   TEACHER_ARCH=transformer_wmt_en_de TEACHER_ARCH_ARGS=""
#   STUDENT_ARCH=transformer_wmt_en_de STUDENT_ARCH_ARGS="--encoder-layers 6 --decoder-layers 3
#                        --encoder-embed-dim 256 --decoder-embed-dim 256 --encoder-ffn-embed-dim 1024
#                        --decoder-ffn-embed-dim 1024 --encoder-attention-heads 4 --decoder-attention-heads 4"
#   TEACHER_LS=0.1 STUDENT_LS=0.1 KD_ALPHA=0.5 KD_TEMPERATURE=1 KD_TOPK=8 SEQKD_BEAM=4 SEQKD_BETA=1
#   LR=7e-4 WARMUP=4000 DROPOUT=0.1 WEIGHT_DECAY=0 MAX_TOKENS=4096 UPDATE_FREQ=8
#                        (per GPU: 4096 x GPUs x UPDATE_FREQ tokens an update; 8 GPUs x 4096 x 1 was Vaswani's ~25k x 1.3)
#   MAX_UPDATE_TEACHER=100000 MAX_UPDATE_STUDENT=100000 MAX_TRAIN_HOURS_TEACHER=0 MAX_TRAIN_HOURS_STUDENT=0
#   BEAM=4 LENPEN=0.6 GEN_MAX_TOKENS=8000 MAX_LEN_A=1.2 MAX_LEN_B=10 EVAL_CHECKPOINT=checkpoint_best.pt SEQKD_EVAL_CHECKPOINT=checkpoint_last.pt
#   DEVICE=auto FP16=auto FORCE=0 STAGE=1 STOP_STAGE=11 EXTRA_TRAIN_ARGS="" WORKERS=8
#   SEED=1 (the students'; seed N != 1 names them <name>_sN) TEACHER_SEED=1   (see recipes/multi30k/run.sh)
#   LR_TEACHER WARMUP_TEACHER DROPOUT_TEACHER MAX_TOKENS_TEACHER (default: LR ...) PATIENCE_TEACHER=0
#   STOP_METRIC_TEACHER=nll_loss   the teachers' own settings and early stopping (see recipes/multi30k/run.sh)
set -euo pipefail
. "$(dirname "$0")/../common.sh"
LSKD_RECIPE=wmt14_en_de
LSKD_TITLE="WMT14"
LSKD_STAGES="$LSKD_NMT_STAGES"
LSKD_OPTIONS="$(echo $LSKD_NMT_OPTIONS TRAIN_CORPORA VALID_PREFIX TEST_PREFIX DOWNLOAD WMT_URLS TRAIN_LINES CLEAN_MIN CLEAN_MAX CLEAN_RATIO)"
lskd_parse_args "$@"

: "${SCALE:=base}"
case "$SCALE" in
    base) ;;
    big)
        : "${TEACHER_ARCH:=transformer_vaswani_wmt_en_de_big}" "${DROPOUT:=0.3}" "${LR:=5e-4}" "${UPDATE_FREQ:=16}" ;;
    cpu)
        : "${TRAIN_LINES:=200000}" "${SPM_VOCAB:=8000}" "${SPM_SENTENCES:=200000}" "${LR:=1e-3}" "${WARMUP:=1000}"
        : "${TEACHER_ARCH:=transformer}" "${STUDENT_ARCH:=transformer}" "${UPDATE_FREQ:=1}" "${WORKERS:=2}"
        : "${TEACHER_ARCH_ARGS:=--encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 256 --decoder-embed-dim 256 --encoder-ffn-embed-dim 1024 --decoder-ffn-embed-dim 1024 --encoder-attention-heads 4 --decoder-attention-heads 4}"
        : "${STUDENT_ARCH_ARGS:=--encoder-layers 2 --decoder-layers 2 --encoder-embed-dim 128 --decoder-embed-dim 128 --encoder-ffn-embed-dim 512 --decoder-ffn-embed-dim 512 --encoder-attention-heads 4 --decoder-attention-heads 4}"
        : "${MAX_UPDATE_TEACHER:=5000}" "${MAX_UPDATE_STUDENT:=3000}" "${SEQKD_BEAM:=1}" "${BEAM:=4}" ;;
    *) lskd_die "--scale must be base, big or cpu (got $SCALE)" ;;
esac
: "${DATA_DIR:=}" "${DOWNLOAD:=0}"
: "${TRAIN_CORPORA:=$DATA_DIR/training/europarl-v7.de-en $DATA_DIR/commoncrawl.de-en $DATA_DIR/training/news-commentary-v9.de-en}"
: "${VALID_PREFIX:=$DATA_DIR/dev/newstest2013}"
: "${TEST_PREFIX:=$LSKD_REPO/../shared/data/wmt14/newstest2014}"
: "${WMT_URLS:=http://statmt.org/wmt13/training-parallel-europarl-v7.tgz http://statmt.org/wmt13/training-parallel-commoncrawl.tgz http://www.statmt.org/wmt14/training-parallel-nc-v9.tgz http://www.statmt.org/wmt14/dev.tgz}"
: "${WORK:=$LSKD_REPO/runs/wmt14_en_de-$SCALE}"
: "${DIRECTIONS:=en-de}" "${TEST_SET:=newstest2014}" "${TRAIN_LINES:=0}"
: "${CLEAN_MIN:=1}" "${CLEAN_MAX:=250}" "${CLEAN_RATIO:=1.5}"
: "${SPM_VOCAB:=32000}" "${SPM_SENTENCES:=10000000}"
: "${TEACHER_ARCH:=transformer_wmt_en_de}" "${STUDENT_ARCH:=transformer_wmt_en_de}"
: "${STUDENT_ARCH_ARGS:=--encoder-layers 6 --decoder-layers 3 --encoder-embed-dim 256 --decoder-embed-dim 256 --encoder-ffn-embed-dim 1024 --decoder-ffn-embed-dim 1024 --encoder-attention-heads 4 --decoder-attention-heads 4}"
: "${KD_TOPK:=8}" "${LR:=7e-4}" "${WARMUP:=4000}" "${WEIGHT_DECAY:=0}" "${UPDATE_FREQ:=8}"
: "${MAX_UPDATE_TEACHER:=100000}" "${MAX_UPDATE_STUDENT:=100000}" "${BEAM:=4}" "${LENPEN:=0.6}" "${WORKERS:=8}"
lskd_nmt_defaults
LANGS="en de"
lskd_nmt_setup

download() {
    [ -n "$DATA_DIR" ] || lskd_die "DOWNLOAD=1 needs --data-dir (where the archives go)"
    mkdir -p "$DATA_DIR"
    local u f
    for u in $WMT_URLS; do
        f="$DATA_DIR/$(basename "$u")"
        if [ ! -f "$f" ]; then
            lskd_log "downloading $u"
            if lskd_have wget; then wget -q -O "$f.tmp" "$u"; else curl -fsSL -o "$f.tmp" "$u"; fi
            mv "$f.tmp" "$f"
        fi
        tar -xzf "$f" -C "$DATA_DIR"
    done
}

do_prepare() {
    if [ "$DOWNLOAD" = 1 ]; then download; fi
    mkdir -p "$RAW"
    local tmp="$WORK/prepare.tmp" p a b l
    rm -rf "$tmp"; mkdir -p "$tmp"
    : > "$tmp/clean.en"; : > "$tmp/clean.de"
    for p in $TRAIN_CORPORA; do
        a="$(lskd_find "$p.en")" || lskd_die "training corpus missing: $p.en[.gz] (see the top of $0 for the files and where to get them)"
        b="$(lskd_find "$p.de")" || lskd_die "training corpus missing: $p.de[.gz]"
        lskd_clean_pair "$a" "$b" "$tmp/clean.en" "$tmp/clean.de" "$CLEAN_MIN" "$CLEAN_MAX" "$CLEAN_RATIO"
    done
    if [ "$TRAIN_LINES" -gt 0 ]; then
        # a seeded random subset, the same on both sides
        paste -d '\t' "$tmp/clean.en" "$tmp/clean.de" |
            awk -v seed="$TEACHER_SEED" 'BEGIN { srand(seed) } { printf "%.10f\t%s\n", rand(), $0 }' |
            sort -k1,1 -t $'\t' | cut -f2- | awk -v n="$TRAIN_LINES" 'NR <= n' > "$tmp/pairs"
        cut -f1 "$tmp/pairs" > "$tmp/train.en"; cut -f2 "$tmp/pairs" > "$tmp/train.de"
    else
        mv "$tmp/clean.en" "$tmp/train.en"; mv "$tmp/clean.de" "$tmp/train.de"
    fi
    for l in $LANGS; do
        a="$(lskd_find "$VALID_PREFIX.$l")" || lskd_die "validation set missing: $VALID_PREFIX.$l[.gz] (newstest2013)"
        lskd_cat "$a" > "$tmp/valid.$l"
        b="$(lskd_find "$TEST_PREFIX.$l")" || lskd_die "test set missing: $TEST_PREFIX.$l[.gz] (newstest2014)"
        lskd_cat "$b" > "$tmp/test.$l"
    done
    for s in train valid test; do for l in $LANGS; do mv "$tmp/$s.$l" "$RAW/$s.$l"; done; done
    rm -rf "$tmp"
    wc -l "$RAW"/*
}

lskd_nmt_main
