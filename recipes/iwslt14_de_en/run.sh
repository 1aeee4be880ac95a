#!/usr/bin/env bash
# IWSLT14 German->English, the paper's NMT setup (Shen et al., ICLR 2021, Sec. NMT):
# transformer_iwslt_de_en teachers trained with and without label smoothing (0.1),
# Adam 5e-4, inverse-sqrt schedule (4000 warm-up updates), dropout 0.3, weight decay 0,
# max-tokens 4096; students without KD, with top-k word-level KD (Tan et al. 2019)
# from each teacher at T=1, and with sequence-level KD from each teacher; sacreBLEU.
#
# Usage:  bash recipes/iwslt14_de_en/run.sh --data-dir /path/to/de-en [--option VALUE ...]
# Every option is also an environment variable (--max-update-teacher 50000 is
# MAX_UPDATE_TEACHER=50000). Defaults are for --scale full (one GPU or more).
#
# Data (not downloadable on machines without internet; nothing is fetched unless DOWNLOAD=1):
#   The IWSLT 2014 TED German-English release, de-en.tgz (the file fairseq's
#   examples/translation/prepare-iwslt14.sh uses), extracted. DATA_DIR must hold
#     train.tags.de-en.de  train.tags.de-en.en
#     IWSLT14.TED.dev2010.de-en.{de,en}.xml  IWSLT14.TEDX.dev2012.de-en.{de,en}.xml
#     IWSLT14.TED.tst2010.de-en.{de,en}.xml  IWSLT14.TED.tst2011.de-en.{de,en}.xml
#     IWSLT14.TED.tst2012.de-en.{de,en}.xml
#   Get it from the WIT3 archive (https://wit3.fbk.eu, "2014-01", texts/de/en/de-en.tgz)
#   or fairseq's mirror; DATA_TGZ=/path/de-en.tgz extracts it for you, and DOWNLOAD=1
#   tries DOWNLOAD_URL when the network is there. Or give already-split plain text:
#   PREPARED_DIR holding {train,valid,test}.{de,en} (used as they are).
#   Splits as in fairseq's script: valid = every 23rd training pair, train = the rest,
#   test = dev2010 + TEDX.dev2012 + tst2010 + tst2011 + tst2012 (6,750 pairs). Unlike that
#   script the text stays untokenized and cased (LOWERCASE=1 lowercases) and sentencepiece
#   segments it; scores are detokenized sacreBLEU, not comparable to tokenized-BLEU numbers.
#
# Stages (--stage / --stop-stage take a name or number; finished work is skipped):
#   1 prepare  2 spm  3 binarize  4 teacher_ls  5 teacher_nols  6 student_nokd
#   7 student_wordkd  8 distill  9 student_seqkd  10 evaluate  11 temperature_sweep (KD_SWEEP_TEMPERATURES)    (see recipes/multi30k/run.sh)
#
# Options (environment variable names; defaults for --scale full):
#   SCALE=full           full (GPU) | cpu (a 20k-pair subset and small models; hours on 2 cores)
#   DATA_DIR=            extracted de-en folder (see above)   DATA_TGZ=  de-en.tgz to extract
#   PREPARED_DIR=        alternative: {train,valid,test}.{de,en} plain text
#   DOWNLOAD=0 DOWNLOAD_URL=http://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz
#   WORK=<repo>/runs/iwslt14_de_en-$SCALE    output folder
#   DIRECTIONS=de-en  TEST_SET=iwslt14 (a label)  LOWERCASE=0
#   TRAIN_LINES=0        keep only the first N training pairs (0 = all)
#   CLEAN_MIN=1 CLEAN_MAX=175 CLEAN_RATIO=1.5   training-pair filter (words), as clean-corpus-n.perl
#   SPM_VOCAB=10000 SPM_TYPE=unigram SPM_SENTENCES=0   joint sentencepiece model on the training split
#   TEACHER_ARCH=transformer_iwslt_de_en TEACHER_ARCH_ARGS=""
#   STUDENT_ARCH=transformer_iwslt_de_en STUDENT_ARCH_ARGS=""   (Tan et al.: same size as the teacher)
#   TEACHER_LS=0.1 STUDENT_LS=0.1
#   KD_ALPHA=0.9 KD_TEMPERATURE=1 KD_TOPK=4  (Tan et al. 2019: alpha 0.9 on KD, 0.1 on LS-NLL, top-4)
#   SEQKD_BEAM=5 SEQKD_BETA=1
#   LR=5e-4 WARMUP=4000 DROPOUT=0.3 WEIGHT_DECAY=0 MAX_TOKENS=4096 UPDATE_FREQ=1
#   MAX_UPDATE_TEACHER=50000 MAX_UPDATE_STUDENT=50000 MAX_TRAIN_HOURS_TEACHER=0 MAX_TRAIN_HOURS_STUDENT=0
#   BEAM=5 LENPEN=1.0 GEN_MAX_TOKENS=8000 MAX_LEN_A=1.2 MAX_LEN_B=10 EVAL_CHECKPOINT=checkpoint_best.pt SEQKD_EVAL_CHECKPOINT=checkpoint_last.pt
#   DEVICE=auto FP16=auto FORCE=0 STAGE=1 STOP_STAGE=11 EXTRA_TRAIN_ARGS="" WORKERS=8
#   SEED=1 (the students'; seed N != 1 names them <name>_sN) TEACHER_SEED=1   (see recipes/multi30k/run.sh)
#   LR_TEACHER WARMUP_TEACHER DROPOUT_TEACHER MAX_TOKENS_TEACHER (default: LR ...) PATIENCE_TEACHER=0
#   STOP_METRIC_TEACHER=nll_loss   the teachers' own settings and early stopping (see recipes/multi30k/run.sh)
#   (CUDA: --fp16 and every visible GPU; MAX_TOKENS is per GPU, so with N GPUs set
#    UPDATE_FREQ to keep 4096 x N x UPDATE_FREQ tokens per update as you intend.)
set -euo pipefail
. "$(dirname "$0")/../common.sh"
LSKD_RECIPE=iwslt14_de_en
LSKD_TITLE="IWSLT14"
LSKD_STAGES="$LSKD_NMT_STAGES"
LSKD_OPTIONS="$(echo $LSKD_NMT_OPTIONS DATA_TGZ PREPARED_DIR DOWNLOAD DOWNLOAD_URL LOWERCASE TRAIN_LINES CLEAN_MIN CLEAN_MAX CLEAN_RATIO)"
lskd_parse_args "$@"

: "${SCALE:=full}"
case "$SCALE" in
    full) ;;
    cpu)
        : "${TRAIN_LINES:=20000}" "${SPM_VOCAB:=6000}" "${WARMUP:=1000}" "${LR:=1e-3}" "${DROPOUT:=0.1}"
        : "${TEACHER_ARCH:=transformer}" "${STUDENT_ARCH:=transformer}"
        : "${TEACHER_ARCH_ARGS:=--encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 256 --decoder-embed-dim 256 --encoder-ffn-embed-dim 512 --decoder-ffn-embed-dim 512 --encoder-attention-heads 4 --decoder-attention-heads 4}"
        : "${STUDENT_ARCH_ARGS:=--encoder-layers 2 --decoder-layers 2 --encoder-embed-dim 128 --decoder-embed-dim 128 --encoder-ffn-embed-dim 256 --decoder-ffn-embed-dim 256 --encoder-attention-heads 4 --decoder-attention-heads 4}"
        : "${MAX_UPDATE_TEACHER:=3000}" "${MAX_UPDATE_STUDENT:=2000}" "${SEQKD_BEAM:=1}" "${WORKERS:=2}" ;;
    *) lskd_die "--scale must be full or cpu (got $SCALE)" ;;
esac
: "${DATA_DIR:=}" "${DATA_TGZ:=}" "${PREPARED_DIR:=}" "${DOWNLOAD:=0}"
: "${DOWNLOAD_URL:=http://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz}"
: "${WORK:=$LSKD_REPO/runs/iwslt14_de_en-$SCALE}"
: "${DIRECTIONS:=de-en}" "${TEST_SET:=iwslt14}" "${LOWERCASE:=0}" "${TRAIN_LINES:=0}"
: "${CLEAN_MIN:=1}" "${CLEAN_MAX:=175}" "${CLEAN_RATIO:=1.5}"
: "${SPM_VOCAB:=10000}" "${TEACHER_ARCH:=transformer_iwslt_de_en}" "${STUDENT_ARCH:=transformer_iwslt_de_en}"
: "${KD_ALPHA:=0.9}" "${KD_TOPK:=4}" "${SEQKD_BEAM:=5}"
: "${LR:=5e-4}" "${WARMUP:=4000}" "${DROPOUT:=0.3}" "${WEIGHT_DECAY:=0}"
: "${MAX_UPDATE_TEACHER:=50000}" "${MAX_UPDATE_STUDENT:=50000}" "${WORKERS:=8}"
lskd_nmt_defaults
LANGS="de en"
lskd_nmt_setup

IWSLT_TEST_SETS="IWSLT14.TED.dev2010 IWSLT14.TEDX.dev2012 IWSLT14.TED.tst2010 IWSLT14.TED.tst2011 IWSLT14.TED.tst2012"

lower() { if [ "$LOWERCASE" = 1 ]; then perl -CSD -pe '$_ = lc'; else cat; fi; }

# the training file's text lines (no <url>/<talkid>/<keywords> lines, title/description tags removed)
iwslt_train_text() {
    grep -v '<url>' "$1" | grep -v '<talkid>' | grep -v '<keywords>' | grep -v '<speaker>' |
        grep -v '<reviewer' | grep -v '<translator' | grep -v '<doc ' | grep -v '</doc>' |
        sed -e 's/<title>//g; s/<\/title>//g; s/<description>//g; s/<\/description>//g' |
        sed -e 's/^[[:space:]]*//; s/[[:space:]]*$//'
}

# the <seg> contents of an IWSLT xml file
iwslt_xml_text() {
    grep '<seg id' "$1" | sed -e 's/<seg id="[0-9]*">[[:space:]]*//g; s/[[:space:]]*<\/seg>[[:space:]]*//g' |
        sed -e "s/\xe2\x80\x99/'/g"
}

do_prepare() {
    mkdir -p "$RAW"
    local l d="$DATA_DIR" tmp="$WORK/prepare.tmp"
    rm -rf "$tmp"; mkdir -p "$tmp"
    if [ -n "$PREPARED_DIR" ]; then
        for s in train valid test; do for l in $LANGS; do
            f="$(lskd_find "$PREPARED_DIR/$s.$l")" || lskd_die "missing $PREPARED_DIR/$s.$l"
            lskd_cat "$f" | lower > "$RAW/$s.$l.tmp"; mv "$RAW/$s.$l.tmp" "$RAW/$s.$l"
        done; done
        return 0
    fi
    if [ -z "$d" ] || [ ! -f "$d/train.tags.de-en.de" ]; then
        if [ -z "$DATA_TGZ" ] && [ "$DOWNLOAD" = 1 ]; then
            DATA_TGZ="$WORK/de-en.tgz"
            lskd_log "downloading $DOWNLOAD_URL"
            if lskd_have wget; then wget -q -O "$DATA_TGZ.tmp" "$DOWNLOAD_URL"; else curl -fsSL -o "$DATA_TGZ.tmp" "$DOWNLOAD_URL"; fi
            mv "$DATA_TGZ.tmp" "$DATA_TGZ"
        fi
        if [ -n "$DATA_TGZ" ]; then
            tar -xzf "$DATA_TGZ" -C "$tmp"
            d="$(dirname "$(find "$tmp" -name train.tags.de-en.de | head -n 1)")"
        fi
    fi
    if [ -z "$d" ] || [ ! -f "$d/train.tags.de-en.de" ]; then
        lskd_die "IWSLT14 data not found: give --data-dir (the extracted de-en folder with train.tags.de-en.de ...), --data-tgz de-en.tgz, --prepared-dir, or --download 1 (see the top of $0)"
    fi
    for l in $LANGS; do
        iwslt_train_text "$d/train.tags.de-en.$l" | lower > "$tmp/train.tags.$l"
        for t in $IWSLT_TEST_SETS; do
            [ -f "$d/$t.de-en.$l.xml" ] || lskd_die "missing $d/$t.de-en.$l.xml"
            iwslt_xml_text "$d/$t.de-en.$l.xml" | lower
        done > "$tmp/test.$l"
    done
    lskd_clean_pair "$tmp/train.tags.de" "$tmp/train.tags.en" "$tmp/clean.de" "$tmp/clean.en" \
        "$CLEAN_MIN" "$CLEAN_MAX" "$CLEAN_RATIO"
    for l in $LANGS; do
        awk 'NR % 23 == 0' "$tmp/clean.$l" > "$tmp/valid.$l"
        awk -v n="$TRAIN_LINES" 'NR % 23 != 0 { k++; if (n == 0 || k <= n) print }' "$tmp/clean.$l" > "$tmp/train.$l"
    done
    for s in train valid test; do for l in $LANGS; do mv "$tmp/$s.$l" "$RAW/$s.$l"; done; done
    rm -rf "$tmp"
    wc -l "$RAW"/*
}

lskd_nmt_main
