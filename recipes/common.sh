# Shared machinery of the lskd recipes (sourced by recipes/*/run.sh).
#
# * options: every setting is a shell variable with a default (set in the recipe
#   with ${VAR:=default}); `--some-name VALUE` or `--some-name=VALUE` on the command
#   line sets SOME_NAME, and so does the environment variable SOME_NAME.
# * stages: the recipe lists its stages in order (LSKD_STAGES); --stage/--stop-stage
#   (names or 1-based numbers) pick a range.
# * skip-if-done: every unit of work (a stage, or one model within a stage) ends by
#   writing a marker file $WORK/.done/<step>; a step whose marker exists is skipped,
#   so an interrupted step reruns and a finished one does not. --force 1 reruns.
# * outputs are written under temporary names and renamed into place.
# * logging: each step logs to $WORK/logs/<step>.log; the recipe's own progress
#   goes to stderr and $WORK/logs/recipe.log.

# LSKD_REPO: the lskd checkout whose plugin (--user-dir) and virtualenv are used;
# by default the one holding this file.
LSKD_REPO="${LSKD_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
LSKD_USER_DIR="$LSKD_REPO/lskd_fairseq"
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore}"
# use the project's virtual environment when none is active
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f "$LSKD_REPO/.venv/bin/activate" ]; then
    # shellcheck disable=SC1091
    . "$LSKD_REPO/.venv/bin/activate"
fi

lskd_log() {
    local msg="[$(date -u +%Y-%m-%dT%H:%M:%SZ)] ${LSKD_RECIPE:-recipe}: $*"
    echo "$msg" >&2
    if [ -n "${WORK:-}" ] && [ -d "$WORK/logs" ]; then echo "$msg" >> "$WORK/logs/recipe.log"; fi
}

lskd_die() { lskd_log "ERROR: $*"; exit 1; }

# Print the documentation block at the top of the calling script (its first
# comment block, without the shebang).
lskd_usage() {
    sed -n '2,/^[^#]/p' "$0" | sed -e '/^[^#]/d' -e 's/^# \{0,1\}//'
}

# lskd_parse_args "$@": --foo-bar VALUE -> FOO_BAR=VALUE, for names in LSKD_OPTIONS.
lskd_parse_args() {
    local key val var
    while [ $# -gt 0 ]; do
        case "$1" in
            -h|--help) lskd_usage; exit 0 ;;
            --*=*) key="${1%%=*}"; val="${1#*=}"; shift ;;
            --*)
                key="$1"
                if [ $# -lt 2 ]; then lskd_die "option $key needs a value (see --help)"; fi
                val="$2"; shift 2 ;;
            *) lskd_die "unexpected argument '$1' (options are --name VALUE; see --help)" ;;
        esac
        var="$(echo "${key#--}" | tr 'a-z-' 'A-Z_')"
        case " $LSKD_OPTIONS " in
            *" $var "*) printf -v "$var" '%s' "$val"; export "$var" ;;
            *) lskd_die "unknown option $key (see --help)" ;;
        esac
    done
}

# Stage index (1-based) of a stage given by name or number.
lskd_stage_index() {
    local want="$1" i=1 s
    if [[ "$want" =~ ^[0-9]+$ ]]; then echo "$want"; return 0; fi
    for s in $LSKD_STAGES; do
        if [ "$s" = "$want" ]; then echo "$i"; return 0; fi
        i=$((i + 1))
    done
    lskd_die "unknown stage '$want'; stages are: $LSKD_STAGES"
}

# lskd_stage NAME: true when NAME lies within --stage .. --stop-stage.
lskd_stage() {
    local i lo hi
    i="$(lskd_stage_index "$1")"
    lo="$(lskd_stage_index "${STAGE:-1}")"
    hi="$(lskd_stage_index "${STOP_STAGE:-1000}")"
    if [ "$i" -ge "$lo" ] && [ "$i" -le "$hi" ]; then
        lskd_log "== stage $i: $1"
        return 0
    fi
    return 1
}

lskd_done() { [ -e "$WORK/.done/$1" ] && [ "${FORCE:-0}" != 1 ]; }

# lskd_step STEP CMD...: run CMD (a command or shell function) unless STEP is done;
# its output goes to $WORK/logs/STEP.log; the marker is written last.
lskd_step() {
    local step="$1"; shift
    if lskd_done "$step"; then
        lskd_log "skip $step (done: $WORK/.done/$step)"
        return 0
    fi
    mkdir -p "$WORK/logs" "$WORK/.done"
    local log="$WORK/logs/$step.log" t0 t1
    lskd_log "run  $step (log: $log)"
    t0=$(date +%s)
    # not "if ! cmd": errexit would be off inside cmd; a subshell with set -e stops at the first error
    local rc=0
    set +e
    ( set -e; "$@" ) >> "$log" 2>&1
    rc=$?
    set -e
    if [ "$rc" != 0 ]; then
        tail -n 40 "$log" >&2
        lskd_die "step $step failed (exit $rc); see $log"
    fi
    t1=$(date +%s)
    echo "$((t1 - t0))" > "$WORK/.done/.$step.tmp"
    mv "$WORK/.done/.$step.tmp" "$WORK/.done/$step"
    lskd_log "done $step in $((t1 - t0)) s"
}

# Device: CUDA when torch sees it (fp16 unless FP16=no; fairseq spreads training
# over all visible GPUs by itself), otherwise CPU.
lskd_detect_device() {
    if [ "${DEVICE:-auto}" = auto ]; then
        if python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
            DEVICE=cuda
        else
            DEVICE=cpu
        fi
    fi
    NGPU=0
    if [ "$DEVICE" = cuda ]; then
        NGPU="$(python -c 'import torch; print(torch.cuda.device_count())')"
        LSKD_DEVICE_ARGS=""
        if [ "${FP16:-auto}" != no ]; then LSKD_DEVICE_ARGS="--fp16"; fi
        LSKD_GEN_DEVICE_ARGS="$LSKD_DEVICE_ARGS"
    else
        LSKD_DEVICE_ARGS="--cpu"
        LSKD_GEN_DEVICE_ARGS="--cpu"
    fi
    lskd_log "device: $DEVICE (GPUs: $NGPU) -> ${LSKD_DEVICE_ARGS}"
}

# lskd_train SAVE_DIR DATA_BIN ARGS...: fairseq-train into SAVE_DIR (resumes from
# its checkpoint_last.pt when interrupted); the wall time in seconds, summed over
# resumptions, ends up in SAVE_DIR/train_seconds.
lskd_train() {
    local save="$1" data="$2"; shift 2
    mkdir -p "$save"
    local t0 t1 prev=0
    if [ -f "$save/.train_seconds.partial" ]; then prev="$(cat "$save/.train_seconds.partial")"; fi
    t0=$(date +%s)
    # shellcheck disable=SC2086
    fairseq-train "$data" --user-dir "$LSKD_USER_DIR" --save-dir "$save" \
        $LSKD_DEVICE_ARGS $LSKD_BATCH_FIX --no-epoch-checkpoints --log-format simple --seed "${SEED:-1}" "$@" || {
        t1=$(date +%s); echo "$((prev + t1 - t0))" > "$save/.train_seconds.partial"; return 1; }
    t1=$(date +%s)
    echo "$((prev + t1 - t0))" > "$save/.train_seconds.tmp"
    mv "$save/.train_seconds.tmp" "$save/train_seconds"
    rm -f "$save/.train_seconds.partial"
}

# fairseq 0.12's batch_by_size silently drops the last sentences of a dataset
# when --required-batch-size-multiple > 1 (its default is 8): generation would
# miss test sentences and training would never see some pairs. Every call here
# uses --required-batch-size-multiple 1.
LSKD_BATCH_FIX="--required-batch-size-multiple 1"

# lskd_generate DATA_BIN CHECKPOINT SUBSET OUT ARGS...: fairseq-generate to OUT (atomically).
lskd_generate() {
    local data="$1" ckpt="$2" subset="$3" out="$4"; shift 4
    # shellcheck disable=SC2086
    fairseq-generate "$data" --user-dir "$LSKD_USER_DIR" --path "$ckpt" --gen-subset "$subset" \
        $LSKD_GEN_DEVICE_ARGS $LSKD_BATCH_FIX "$@" > "$out.tmp"
    mv "$out.tmp" "$out"
}

take_lines() {  # take_lines SRC N DST: first N lines (all if 0), decompressing .gz
    local src="$1" n="$2" dst="$3"
    # awk reads everything (no SIGPIPE under pipefail, unlike head)
    { if [[ "$src" == *.gz ]]; then zcat "$src"; else cat "$src"; fi; } |
        awk -v n="$n" 'n == 0 || NR <= n' > "$dst.tmp"
    mv "$dst.tmp" "$dst"
}

lskd_cat() {  # lskd_cat FILE: print a plain or .gz file
    if [[ "$1" == *.gz ]]; then zcat "$1"; else cat "$1"; fi
}

# lskd_find PREFIX: PREFIX, or PREFIX.gz, whichever exists (else fails)
lskd_find() {
    if [ -f "$1" ]; then echo "$1"; elif [ -f "$1.gz" ]; then echo "$1.gz"; else return 1; fi
}

# lskd_clean_pair SRC_IN TGT_IN SRC_OUT TGT_OUT MIN MAX RATIO: append the sentence pairs
# whose whitespace-token lengths lie in [MIN, MAX] on both sides and whose length
# ratio is at most RATIO (0: no ratio check), like Moses' clean-corpus-n.perl.
lskd_clean_pair() {
    local a="$1" b="$2" oa="$3" ob="$4" min="$5" max="$6" ratio="$7"
    local na nb
    na=$(lskd_cat "$a" | wc -l) nb=$(lskd_cat "$b" | wc -l)
    if [ "$na" != "$nb" ]; then lskd_die "$a has $na lines but $b has $nb"; fi
    paste -d '\t' <(lskd_cat "$a" | tr '\t\r' '  ') <(lskd_cat "$b" | tr '\t\r' '  ') |
        awk -F'\t' -v min="$min" -v max="$max" -v r="$ratio" -v oa="$oa" -v ob="$ob" '{
            gsub(/^ +| +$/, "", $1); gsub(/^ +| +$/, "", $2)
            ns = split($1, x, " "); nt = split($2, y, " ")
            if (ns < min || nt < min || ns > max || nt > max) next
            if (r > 0 && (ns > r * nt || nt > r * ns)) next
            print $1 >> oa; print $2 >> ob }'
}

lskd_have() { command -v "$1" > /dev/null 2>&1; }

# ====================================================================== NMT pipeline
# Shared by recipes/{multi30k,iwslt14_de_en,wmt14_en_de}/run.sh. A recipe defines
# do_prepare (writing $RAW/{train,valid,test}.<lang> as raw, untokenized text), sets
# its defaults, and calls lskd_nmt_main. Everything after prepare is the same:
# sentencepiece -> binarize -> teachers with/without LS -> students -> evaluate.

LSKD_NMT_STAGES="prepare spm binarize teacher_ls teacher_nols student_nokd student_wordkd distill student_seqkd evaluate temperature_sweep"
LSKD_NMT_OPTIONS="SCALE DATA_DIR WORK DIRECTIONS TEST_SET SPM_VOCAB SPM_TYPE SPM_SENTENCES
 TEACHER_ARCH TEACHER_ARCH_ARGS STUDENT_ARCH STUDENT_ARCH_ARGS TEACHER_LS STUDENT_LS KD_ALPHA KD_TEMPERATURE KD_TOPK
 KD_SWEEP_TEMPERATURES
 SEQKD_BEAM SEQKD_BETA SEQKD_EVAL_CHECKPOINT LR WARMUP DROPOUT WEIGHT_DECAY MAX_TOKENS UPDATE_FREQ MAX_UPDATE_TEACHER MAX_UPDATE_STUDENT
 MAX_TRAIN_HOURS_TEACHER MAX_TRAIN_HOURS_STUDENT BEAM LENPEN GEN_MAX_TOKENS MAX_LEN_A MAX_LEN_B EVAL_CHECKPOINT
 DEVICE FP16 SEED FORCE STAGE STOP_STAGE EXTRA_TRAIN_ARGS WORKERS"

# Defaults of the options every NMT recipe has (a recipe sets its own first).
lskd_nmt_defaults() {
    : "${SPM_TYPE:=unigram}" "${SPM_SENTENCES:=0}"
    : "${TEACHER_ARCH:=transformer}" "${STUDENT_ARCH:=transformer}" "${TEACHER_ARCH_ARGS:=}" "${STUDENT_ARCH_ARGS:=}"
    : "${TEACHER_LS:=0.1}" "${STUDENT_LS:=0.1}" "${KD_ALPHA:=0.5}" "${KD_TEMPERATURE:=1}" "${KD_TOPK:=4}"
    : "${KD_SWEEP_TEMPERATURES:=}"
    # a Seq-KD student's NLL on the gold validation references rises while it learns the teacher's
    # outputs, so checkpoint_best (lowest such NLL) would keep its first epoch: score its last one
    : "${SEQKD_EVAL_CHECKPOINT:=checkpoint_last.pt}"
    : "${SEQKD_BEAM:=4}" "${SEQKD_BETA:=1}" "${LR:=1e-3}" "${DROPOUT:=0.1}" "${WEIGHT_DECAY:=0.0001}"
    : "${MAX_TOKENS:=4096}" "${UPDATE_FREQ:=1}"
    : "${MAX_TRAIN_HOURS_TEACHER:=0}" "${MAX_TRAIN_HOURS_STUDENT:=0}" "${BEAM:=5}" "${LENPEN:=1.0}"
    : "${GEN_MAX_TOKENS:=8000}" "${MAX_LEN_A:=1.2}" "${MAX_LEN_B:=10}"
    : "${EVAL_CHECKPOINT:=checkpoint_best.pt}" "${DEVICE:=auto}" "${FP16:=auto}" "${SEED:=1}" "${FORCE:=0}"
    : "${STAGE:=1}" "${STOP_STAGE:=temperature_sweep}" "${EXTRA_TRAIN_ARGS:=}" "${WORKERS:=2}"
    export PYTHONWARNINGS
}

# Set up WORK, the device, RAW and SPM (call after the defaults).
lskd_nmt_setup() {
    mkdir -p "$WORK/logs"
    WORK="$(cd "$WORK" && pwd)"
    lskd_log "scale=$SCALE work=$WORK directions='$DIRECTIONS' data=${DATA_DIR:-}"
    lskd_detect_device
    RAW="$WORK/raw" SPM="$WORK/spm"
}

do_spm() {
    mkdir -p "$SPM"
    local s l ins=() outs=() train=()
    for l in $LANGS; do train+=("$RAW/train.$l"); done
    # one joint model for all languages, trained on the training split only
    python -m lskd_fairseq.cli.spm train --input "${train[@]}" --model-prefix "$SPM/spm" \
        --vocab-size "$SPM_VOCAB" --model-type "$SPM_TYPE" --input-sentence-size "$SPM_SENTENCES"
    for s in train valid test; do for l in $LANGS; do ins+=("$RAW/$s.$l"); outs+=("$SPM/$s.$l"); done; done
    python -m lskd_fairseq.cli.spm encode --model "$SPM/spm.model" --input "${ins[@]}" --output "${outs[@]}"
}

do_binarize() {  # do_binarize SRC TGT DIR
    local src="$1" tgt="$2" dir="$3"
    rm -rf "$dir/bin.tmp"
    fairseq-preprocess --source-lang "$src" --target-lang "$tgt" --joined-dictionary \
        --trainpref "$SPM/train" --validpref "$SPM/valid" --testpref "$SPM/test" \
        --destdir "$dir/bin.tmp" --workers "$WORKERS"
    rm -rf "$dir/bin"; mv "$dir/bin.tmp" "$dir/bin"
}

common_train_args() {  # common_train_args MAX_UPDATE MAX_HOURS
    echo --optimizer adam --adam-betas "(0.9,0.98)" --lr "$LR" --lr-scheduler inverse_sqrt \
        --warmup-updates "$WARMUP" --warmup-init-lr 1e-07 --dropout "$DROPOUT" --weight-decay "$WEIGHT_DECAY" \
        --max-tokens "$MAX_TOKENS" --update-freq "$UPDATE_FREQ" --max-update "$1" --share-all-embeddings \
        --best-checkpoint-metric nll_loss --log-interval 20 --stop-time-hours "$2" $EXTRA_TRAIN_ARGS
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

# T2, T0p5: the tag of a temperature in model names (as lskd-study's t_tag)
lskd_t_tag() { local t; t="$(printf '%g' "$1")"; echo "T${t//./p}"; }

# KD_SWEEP_TEMPERATURES, checked: positive numbers other than KD_TEMPERATURE (whose students
# are student_wordkd_*), one per line
lskd_sweep_temperatures() {
    local t
    for t in $KD_SWEEP_TEMPERATURES; do
        if ! [[ "$t" =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)$ ]] || [ "$(printf '%g' "$t")" = 0 ]; then
            lskd_die "KD_SWEEP_TEMPERATURES: '$t' is not a positive number (give e.g. --kd-sweep-temperatures '2 4')"
        fi
        if [ "$(printf '%g' "$t")" != "$(printf '%g' "$KD_TEMPERATURE")" ]; then printf '%g\n' "$t"; fi
    done
}

train_student_at() {  # train_student_at T DIR NAME DATA_BIN TEACHER_CKPT: word-level KD at temperature T
    local KD_TEMPERATURE="$1"; shift
    train_student "$@"
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
        local ck="$EVAL_CHECKPOINT"
        case "$name" in student_seqkd_*) ck="$SEQKD_EVAL_CHECKPOINT" ;; esac
        models+=(--model "$name=$dir/models/$name/$ck")
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
        --title "$LSKD_TITLE $SRC→$TGT ($TEST_SET, scale $SCALE)"
}

lskd_nmt_main() {
    lskd_sweep_temperatures > /dev/null   # refuse a bad KD_SWEEP_TEMPERATURES now, not after hours of training
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

    if lskd_stage prepare; then lskd_step prepare do_prepare; fi
    if lskd_stage spm; then lskd_step spm do_spm; fi

    for DIR_NAME in $DIRECTIONS; do
        SRC="${DIR_NAME%-*}" TGT="${DIR_NAME#*-}"
        case " $LANGS " in *" $SRC "*) ;; *) lskd_die "DIRECTIONS: unknown source language in $DIR_NAME (languages: $LANGS)" ;; esac
        case " $LANGS " in *" $TGT "*) ;; *) lskd_die "DIRECTIONS: unknown target language in $DIR_NAME (languages: $LANGS)" ;; esac
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
        if lskd_stage temperature_sweep; then
            sweep="$(lskd_sweep_temperatures)"
            if [ -z "$sweep" ]; then
                lskd_log "temperature_sweep: no temperatures besides KD_TEMPERATURE=$KD_TEMPERATURE (set KD_SWEEP_TEMPERATURES); nothing to do"
            else
                base_models=("${MODELS[@]}")
                for t in $sweep; do
                    tag="$(lskd_t_tag "$t")"
                    for tn in ls nols; do
                        if [ "$tn" = ls ]; then tck="$T_LS"; else tck="$T_NOLS"; fi
                        lskd_step "$DIR_NAME.student_wordkd_${tn}_$tag" train_student_at "$t" "$D" \
                            "student_wordkd_${tn}_$tag" "$D/bin" "$tck"
                        MODELS+=("student_wordkd_${tn}_$tag|teacher_$tn|word top-$KD_TOPK T=$t|$STUDENT_LS")
                    done
                done
                rm -f "$WORK/.done/$DIR_NAME.evaluate_sweep"
                lskd_step "$DIR_NAME.evaluate_sweep" evaluate_all "$TGT" "$D"
                MODELS=("${base_models[@]}")
            fi
        fi
    done

    # evaluate and temperature_sweep both end by writing the tables (the last two stages)
    if [ "$(lskd_stage_index evaluate)" -le "$(lskd_stage_index "$STOP_STAGE")" ]; then
        tables=()
        for DIR_NAME in $DIRECTIONS; do
            if [ -f "$WORK/$DIR_NAME/results/table.md" ]; then tables+=("$WORK/$DIR_NAME/results/table.md"); fi
        done
        if [ "${#tables[@]}" -gt 0 ]; then
            { for t in "${tables[@]}"; do cat "$t"; echo; done; } > "$WORK/table.md.tmp"
            mv "$WORK/table.md.tmp" "$WORK/table.md"
            lskd_log "table: $WORK/table.md"
            cat "$WORK/table.md"
        fi
    fi
}
