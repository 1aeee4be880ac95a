# The NMT pipeline of the lskd recipes: sourced by recipes/common.sh, after its shared machinery.

# ====================================================================== NMT pipeline
# Shared by recipes/{multi30k,iwslt14_de_en,wmt14_en_de}/run.sh. A recipe defines
# do_prepare (writing $RAW/{train,valid,test}.<lang> as raw, untokenized text), sets
# its defaults, and calls lskd_nmt_main. Everything after prepare is the same:
# sentencepiece -> binarize -> teachers with/without LS -> students -> evaluate.

LSKD_NMT_STAGES="prepare spm binarize teacher_ls teacher_nols student_nokd student_wordkd distill student_seqkd evaluate temperature_sweep teacher_cache"
LSKD_NMT_OPTIONS="SCALE DATA_DIR WORK DIRECTIONS TEST_SET SPM_VOCAB SPM_TYPE SPM_SENTENCES
 TEACHER_ARCH TEACHER_ARCH_ARGS STUDENT_ARCH STUDENT_ARCH_ARGS TEACHER_LS STUDENT_LS KD_ALPHA KD_TEMPERATURE KD_TOPK
 KD_SWEEP_TEMPERATURES TEACHER_CACHE
 SEQKD_BEAM SEQKD_BETA SEQKD_EVAL_CHECKPOINT LR WARMUP DROPOUT WEIGHT_DECAY MAX_TOKENS UPDATE_FREQ MAX_UPDATE_TEACHER MAX_UPDATE_STUDENT
 MAX_TRAIN_HOURS_TEACHER MAX_TRAIN_HOURS_STUDENT
 LR_TEACHER WARMUP_TEACHER DROPOUT_TEACHER MAX_TOKENS_TEACHER PATIENCE_TEACHER STOP_METRIC_TEACHER
 BEAM LENPEN GEN_MAX_TOKENS MAX_LEN_A MAX_LEN_B EVAL_CHECKPOINT
 DEVICE FP16 BF16 SEED TEACHER_SEED FORCE STAGE STOP_STAGE EXTRA_TRAIN_ARGS WORKERS"

# Defaults of the options every NMT recipe has (a recipe sets its own first).
lskd_nmt_defaults() {
    : "${SPM_TYPE:=unigram}" "${SPM_SENTENCES:=0}"
    : "${TEACHER_ARCH:=transformer}" "${STUDENT_ARCH:=transformer}" "${TEACHER_ARCH_ARGS:=}" "${STUDENT_ARCH_ARGS:=}"
    : "${TEACHER_LS:=0.1}" "${STUDENT_LS:=0.1}" "${KD_ALPHA:=0.5}" "${KD_TEMPERATURE:=1}" "${KD_TOPK:=4}"
    : "${KD_SWEEP_TEMPERATURES:=}" "${TEACHER_CACHE:=0}"
    # a Seq-KD student's NLL on the gold validation references rises while it learns the teacher's
    # outputs, so checkpoint_best (lowest such NLL) would keep its first epoch: score its last one
    : "${SEQKD_EVAL_CHECKPOINT:=checkpoint_last.pt}"
    : "${SEQKD_BEAM:=4}" "${SEQKD_BETA:=1}" "${LR:=1e-3}" "${DROPOUT:=0.1}" "${WEIGHT_DECAY:=0.0001}"
    : "${MAX_TOKENS:=4096}" "${UPDATE_FREQ:=1}"
    : "${MAX_TRAIN_HOURS_TEACHER:=0}" "${MAX_TRAIN_HOURS_STUDENT:=0}" "${BEAM:=5}" "${LENPEN:=1.0}"
    # the teachers' own training settings (default: the shared ones); PATIENCE_TEACHER > 0 stops a
    # teacher once STOP_METRIC_TEACHER on the validation set has not improved for that many epochs
    : "${LR_TEACHER:=$LR}" "${WARMUP_TEACHER:=$WARMUP}" "${DROPOUT_TEACHER:=$DROPOUT}" "${MAX_TOKENS_TEACHER:=$MAX_TOKENS}"
    : "${PATIENCE_TEACHER:=0}" "${STOP_METRIC_TEACHER:=nll_loss}"
    : "${GEN_MAX_TOKENS:=8000}" "${MAX_LEN_A:=1.2}" "${MAX_LEN_B:=10}"
    : "${EVAL_CHECKPOINT:=checkpoint_best.pt}" "${DEVICE:=auto}" "${FP16:=auto}" "${BF16:=auto}" "${FORCE:=0}"
    # SEED: the students' seed (initialisation, data order, dropout); TEACHER_SEED: the teachers'
    : "${SEED:=1}" "${TEACHER_SEED:=1}"
    : "${STAGE:=1}" "${STOP_STAGE:=temperature_sweep}" "${EXTRA_TRAIN_ARGS:=}" "${WORKERS:=2}"
}

# Refuse bad option values before any stage runs (not after hours of training).
lskd_nmt_check_options() {
    local v
    for v in SEED TEACHER_SEED PATIENCE_TEACHER MAX_UPDATE_TEACHER MAX_UPDATE_STUDENT; do
        if ! [[ "${!v}" =~ ^[0-9]+$ ]]; then
            lskd_die "$v: '${!v}' is not a whole number (give e.g. --$(echo "$v" | tr 'A-Z_' 'a-z-') 2)"
        fi
    done
    SEED=$((10#$SEED)) TEACHER_SEED=$((10#$TEACHER_SEED))   # 01 -> 1: one name per seed
    case "$TEACHER_CACHE" in
        0|1) ;;
        *) lskd_die "TEACHER_CACHE: '$TEACHER_CACHE' is not 0 or 1 (give --teacher-cache 1 to train word-KD students from teacher caches)" ;;
    esac
    case "$STOP_METRIC_TEACHER" in
        nll_loss|loss|bleu) ;;
        *) lskd_die "STOP_METRIC_TEACHER: '$STOP_METRIC_TEACHER' is not one of nll_loss, loss, bleu" ;;
    esac
    lskd_sweep_temperatures > /dev/null
}

# Set up WORK, the device, RAW and SPM (call after the defaults).
lskd_nmt_setup() {
    lskd_nmt_check_options
    mkdir -p "$WORK/logs"
    WORK="$(cd "$WORK" && pwd)"
    lskd_log "scale=$SCALE work=$WORK directions='$DIRECTIONS' data=${DATA_DIR:-} seed=$SEED teacher_seed=$TEACHER_SEED"
    lskd_detect_device
    RAW="$WORK/raw" SPM="$WORK/spm"
}

# A student's model name for the current SEED: NAME for seed 1 (the single-seed layout),
# NAME_s<SEED> otherwise. Every student of one seed, of both teachers, uses that seed, so
# the two teachers' students of a seed start from the same initialisation and data order.
lskd_student_name() {
    if [ "$SEED" = 1 ]; then echo "$1"; else echo "$1_s$SEED"; fi
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

common_train_args() {  # common_train_args MAX_UPDATE MAX_HOURS (EXTRA_TRAIN_ARGS is the caller's, last)
    echo --optimizer adam --adam-betas "(0.9,0.98)" --lr "$LR" --lr-scheduler inverse_sqrt \
        --warmup-updates "$WARMUP" --warmup-init-lr 1e-07 --dropout "$DROPOUT" --weight-decay "$WEIGHT_DECAY" \
        --max-tokens "$MAX_TOKENS" --update-freq "$UPDATE_FREQ" --max-update "$1" --share-all-embeddings \
        --log-interval 20 --stop-time-hours "$2"
}

train_teacher() {  # train_teacher DIR NAME LS
    local dir="$1" name="$2" ls="$3"
    # the teachers' own settings, seen by common_train_args and lskd_train
    local LR="$LR_TEACHER" WARMUP="$WARMUP_TEACHER" DROPOUT="$DROPOUT_TEACHER" MAX_TOKENS="$MAX_TOKENS_TEACHER"
    local TRAIN_SEED="$TEACHER_SEED" stop=()
    if [ "$STOP_METRIC_TEACHER" = bleu ]; then
        # validation BLEU as the test set is scored (sentencepiece removed, sacreBLEU 13a), greedy
        stop=(--best-checkpoint-metric bleu --maximize-best-checkpoint-metric --eval-bleu
              --eval-bleu-args "{\"beam\": 1, \"max_len_a\": $MAX_LEN_A, \"max_len_b\": $MAX_LEN_B}"
              --eval-bleu-remove-bpe sentencepiece --eval-bleu-detok space)
    else
        stop=(--best-checkpoint-metric "$STOP_METRIC_TEACHER")
    fi
    if [ "$PATIENCE_TEACHER" -gt 0 ]; then stop+=(--patience "$PATIENCE_TEACHER"); fi
    # shellcheck disable=SC2046,SC2086
    lskd_train "$dir/models/$name" "$dir/bin" --arch "$TEACHER_ARCH" $TEACHER_ARCH_ARGS \
        --criterion label_smoothed_cross_entropy --label-smoothing "$ls" \
        $(common_train_args "$MAX_UPDATE_TEACHER" "$MAX_TRAIN_HOURS_TEACHER") "${stop[@]}" $EXTRA_TRAIN_ARGS
}

# do_teacher_cache DIR TEACHER: the teacher's top-KD_TOPK tokens and logits on every gold target
# token of the training and validation splits (lskd-teacher-cache) -> DIR/teacher_cache/TEACHER
do_teacher_cache() {
    local dir="$1" teacher="$2" split
    for split in train valid; do
        # shellcheck disable=SC2086
        lskd-teacher-cache "$dir/bin" --out "$dir/teacher_cache/$teacher" --split "$split" -k "$KD_TOPK" \
            --teacher-path "$dir/models/$teacher/$EVAL_CHECKPOINT" -s "$SRC" -t "$TGT" \
            --max-tokens "$GEN_MAX_TOKENS" --no-progress-bar $LSKD_TOOL_DEVICE_ARGS
    done
}

train_student() {  # train_student DIR NAME DATA_BIN [TEACHER_CKPT]
    local dir="$1" name="$2" data="$3" teacher="${4:-}" kd tname
    if [ -n "$teacher" ] && [ "$TEACHER_CACHE" = 1 ]; then
        # the teacher's stored outputs (made by the teacher_cache step): no teacher in the process
        tname="$(basename "$(dirname "$teacher")")"
        kd=(--task translation_kd --teacher-cache "$dir/teacher_cache/$tname" --kd-alpha "$KD_ALPHA"
            --kd-temperature "$KD_TEMPERATURE" --kd-topk "$KD_TOPK")
    elif [ -n "$teacher" ]; then
        kd=(--task translation_kd --teacher-path "$teacher" --kd-alpha "$KD_ALPHA"
            --kd-temperature "$KD_TEMPERATURE" --kd-topk "$KD_TOPK")
    else
        kd=(--kd-alpha 0)
    fi
    # shellcheck disable=SC2046,SC2086
    lskd_train "$dir/models/$name" "$data" --arch "$STUDENT_ARCH" $STUDENT_ARCH_ARGS \
        --criterion label_smoothed_kd --label-smoothing "$STUDENT_LS" "${kd[@]}" \
        $(common_train_args "$MAX_UPDATE_STUDENT" "$MAX_TRAIN_HOURS_STUDENT") --best-checkpoint-metric nll_loss \
        $EXTRA_TRAIN_ARGS
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
        --no-progress-bar $LSKD_TOOL_DEVICE_ARGS
}

train_student_seqkd() {  # train_student_seqkd DIR NAME TEACHER: Kim & Rush sequence-level KD
    local dir="$1" name="$2" teacher="$3"
    # shellcheck disable=SC2046,SC2086
    lskd_train "$dir/models/$name" "$dir/bin" --arch "$STUDENT_ARCH" $STUDENT_ARCH_ARGS \
        --task translation_kd --distilled-data "$dir/distill_$teacher" \
        --criterion sequence_distillation --seq-kd-beta "$SEQKD_BETA" --kd-alpha 0 --label-smoothing "$STUDENT_LS" \
        $(common_train_args "$MAX_UPDATE_STUDENT" "$MAX_TRAIN_HOURS_STUDENT") --best-checkpoint-metric nll_loss \
        $EXTRA_TRAIN_ARGS
}

# The stage that trains model NAME (teacher_ls, student_wordkd_nols_s2, student_wordkd_ls_T2, ...).
lskd_model_stage() {
    case "$1" in
        teacher_ls|teacher_nols) echo "$1" ;;
        student_wordkd_*_T*) echo temperature_sweep ;;
        student_nokd*) echo student_nokd ;;
        student_wordkd_*) echo student_wordkd ;;
        student_seqkd_*) echo student_seqkd ;;
        *) echo "?" ;;
    esac
}

# The checkpoint of model NAME in DIR that is evaluated.
lskd_model_checkpoint() {
    case "$2" in
        student_seqkd_*) echo "$1/models/$2/$SEQKD_EVAL_CHECKPOINT" ;;
        *) echo "$1/models/$2/$EVAL_CHECKPOINT" ;;
    esac
}

# lskd_eval_split DIR: MODELS -> EVAL_READY (trained: step marker and checkpoint there) and
# EVAL_MISSING (each "name (run --stage S [--seed N])").
lskd_eval_split() {
    local dir="$1" m name stage ck seedopt=""
    EVAL_READY=() EVAL_MISSING=()
    if [ "$SEED" != 1 ]; then seedopt=" --seed $SEED"; fi
    for m in "${MODELS[@]}"; do
        name="${m%%|*}"
        ck="$(lskd_model_checkpoint "$dir" "$name")"
        if [ -e "$WORK/.done/$DIR_NAME.$name" ] && [ -f "$ck" ]; then
            EVAL_READY+=("$m")
        else
            stage="$(lskd_model_stage "$name")"
            case "$name" in teacher_*) EVAL_MISSING+=("$name (run --stage $stage)") ;;
                            *) EVAL_MISSING+=("$name (run --stage $stage$seedopt)") ;; esac
        fi
    done
}

evaluate_all() {  # evaluate_all TGT DIR [notable]: the models in EVAL_READY, one process; results/<name>.json each
    local tgt="$1" dir="$2" table="${3:-table}" m name teacher kd ls seed models=() metas=()
    for m in "${EVAL_READY[@]}"; do
        IFS='|' read -r name teacher kd ls seed <<< "$m"
        models+=(--model "$name=$(lskd_model_checkpoint "$dir" "$name")")
        metas+=(--model-meta "$name:order=$(lskd_model_order "$name")" --model-meta "$name:teacher=$teacher"
                --model-meta "$name:kd=$kd" --model-meta "$name:label_smoothing=$ls" --model-meta "$name:seed=$seed")
    done
    local force=()
    if [ "$FORCE" = 1 ]; then force=(--force); fi
    # shellcheck disable=SC2086
    python -m lskd_fairseq.cli.evaluate "$dir/bin" --subset test --ref "$RAW/test.$tgt" --spm "$SPM/spm.model" \
        --results-dir "$dir/results" --gen-dir "$dir/gen" --user-dir "$LSKD_USER_DIR" "${models[@]}" "${metas[@]}" \
        "${force[@]}" --meta "direction=$DIR_NAME" "scale=$SCALE" "test_set=$TEST_SET" "beam=$BEAM" -- \
        --beam "$BEAM" --lenpen "$LENPEN" --max-tokens "$GEN_MAX_TOKENS" --max-len-a "$MAX_LEN_A" \
        --max-len-b "$MAX_LEN_B" $LSKD_GEN_DEVICE_ARGS $LSKD_BATCH_FIX
    if [ "$table" = table ]; then
        lskd-bleu table "$dir/results" --out "$dir/results/table.md" \
            --title "$LSKD_TITLE $SRC→$TGT ($TEST_SET, scale $SCALE)"
    fi
}

# Table order of a model: its place in MODELS (seeds of one model side by side).
lskd_model_order() {
    local m i=0
    for m in "${MODELS[@]}"; do
        i=$((i + 1))
        if [ "${m%%|*}" = "$1" ]; then echo "$i"; return 0; fi
    done
    echo 1000
}

# lskd_evaluate_stage STEP TGT DIR: score every trained model of MODELS. When some are not
# trained yet, the ones that are still get their results/<name>.json, but no table is written
# (a table that lacks models would look complete) and the stage fails, naming what to run.
lskd_evaluate_stage() {
    local step="$1" tgt="$2" dir="$3"
    rm -f "$WORK/.done/$step"   # per-model results are skipped by the evaluator itself
    lskd_eval_split "$dir"
    if [ "${#EVAL_MISSING[@]}" -gt 0 ]; then
        rm -f "$dir/results/table.md" "$WORK/table.md"
        if [ "${#EVAL_READY[@]}" -gt 0 ]; then lskd_run_logged "$step" evaluate_all "$tgt" "$dir" notable; fi
        local missing="" m
        for m in "${EVAL_MISSING[@]}"; do missing="$missing${missing:+; }$m"; done
        lskd_die "$step: ${#EVAL_MISSING[@]} of ${#MODELS[@]} models not trained yet: $missing. Run those stages, then this one again (scored so far: ${#EVAL_READY[@]}, in $dir/results; no table written)"
    fi
    lskd_step "$step" evaluate_all "$tgt" "$dir"
}

# Both teachers' teacher_cache steps in the current direction (skipped when done).
lskd_teacher_caches() {
    local tn tck
    for tn in ls nols; do
        if [ "$tn" = ls ]; then tck="$T_LS"; else tck="$T_NOLS"; fi
        lskd_need "$DIR_NAME.teacher_cache_$tn" "$DIR_NAME.teacher_$tn" "teacher_$tn" "$tck"
        lskd_step "$DIR_NAME.teacher_cache_$tn" do_teacher_cache "$D" "teacher_$tn"
    done
}

lskd_nmt_main() {
    # (name, teacher, kd, ls, seed) of every model, in table order; with SEQKD_BETA=1 a Seq-KD
    # student's loss is the unsmoothed NLL of the teacher's sequences
    if [ "$SEQKD_BETA" = 1 ]; then SEQKD_LS=0; else SEQKD_LS="$STUDENT_LS (gold term)"; fi
    local s_nokd s_wls s_wnols s_sls s_snols
    s_nokd="$(lskd_student_name student_nokd)"
    s_wls="$(lskd_student_name student_wordkd_ls)" s_wnols="$(lskd_student_name student_wordkd_nols)"
    s_sls="$(lskd_student_name student_seqkd_ls)" s_snols="$(lskd_student_name student_seqkd_nols)"
    MODELS=(
        "teacher_ls|–|–|$TEACHER_LS|$TEACHER_SEED"
        "teacher_nols|–|–|0|$TEACHER_SEED"
        "$s_nokd|–|none|$STUDENT_LS|$SEED"
        "$s_wls|teacher_ls|word top-$KD_TOPK T=$KD_TEMPERATURE|$STUDENT_LS|$SEED"
        "$s_wnols|teacher_nols|word top-$KD_TOPK T=$KD_TEMPERATURE|$STUDENT_LS|$SEED"
        "$s_sls|teacher_ls|sequence beam $SEQKD_BEAM|$SEQKD_LS|$SEED"
        "$s_snols|teacher_nols|sequence beam $SEQKD_BEAM|$SEQKD_LS|$SEED"
    )

    if lskd_stage prepare; then lskd_step prepare do_prepare; fi
    if lskd_stage spm; then
        lskd_need spm prepare prepare "$RAW/train.${LANGS%% *}"
        lskd_step spm do_spm
    fi

    for DIR_NAME in $DIRECTIONS; do
        SRC="${DIR_NAME%-*}" TGT="${DIR_NAME#*-}"
        case " $LANGS " in *" $SRC "*) ;; *) lskd_die "DIRECTIONS: unknown source language in $DIR_NAME (languages: $LANGS)" ;; esac
        case " $LANGS " in *" $TGT "*) ;; *) lskd_die "DIRECTIONS: unknown target language in $DIR_NAME (languages: $LANGS)" ;; esac
        D="$WORK/$SRC-$TGT"
        mkdir -p "$D"
        T_LS="$D/models/teacher_ls/$EVAL_CHECKPOINT" T_NOLS="$D/models/teacher_nols/$EVAL_CHECKPOINT"
        local B="$DIR_NAME.binarize"
        if lskd_stage binarize; then
            lskd_need "$B" spm spm "$SPM/spm.model"
            lskd_step "$B" do_binarize "$SRC" "$TGT" "$D"
        fi
        if lskd_stage teacher_ls; then
            lskd_need "$DIR_NAME.teacher_ls" "$B" binarize "$D/bin"
            lskd_step "$DIR_NAME.teacher_ls" train_teacher "$D" teacher_ls "$TEACHER_LS"
        fi
        if lskd_stage teacher_nols; then
            lskd_need "$DIR_NAME.teacher_nols" "$B" binarize "$D/bin"
            lskd_step "$DIR_NAME.teacher_nols" train_teacher "$D" teacher_nols 0
        fi
        if lskd_stage student_nokd; then
            lskd_need "$DIR_NAME.$s_nokd" "$B" binarize "$D/bin"
            lskd_step "$DIR_NAME.$s_nokd" train_student "$D" "$s_nokd" "$D/bin"
        fi
        if lskd_stage teacher_cache || { [ "$TEACHER_CACHE" = 1 ] && { lskd_in_stages student_wordkd || lskd_in_stages temperature_sweep; }; }; then
            lskd_teacher_caches  # made once; word-KD students read them when TEACHER_CACHE=1
        fi
        if lskd_stage student_wordkd; then
            lskd_need "$DIR_NAME.$s_wls" "$B" binarize "$D/bin"
            lskd_need "$DIR_NAME.$s_wls" "$DIR_NAME.teacher_ls" teacher_ls "$T_LS"
            lskd_need "$DIR_NAME.$s_wnols" "$DIR_NAME.teacher_nols" teacher_nols "$T_NOLS"
            lskd_step "$DIR_NAME.$s_wls" train_student "$D" "$s_wls" "$D/bin" "$T_LS"
            lskd_step "$DIR_NAME.$s_wnols" train_student "$D" "$s_wnols" "$D/bin" "$T_NOLS"
        fi
        if lskd_stage distill; then
            lskd_need "$DIR_NAME.distill_teacher_ls" "$DIR_NAME.teacher_ls" teacher_ls "$T_LS"
            lskd_need "$DIR_NAME.distill_teacher_nols" "$DIR_NAME.teacher_nols" teacher_nols "$T_NOLS"
            lskd_step "$DIR_NAME.distill_teacher_ls" do_distill "$SRC" "$TGT" "$D" teacher_ls
            lskd_step "$DIR_NAME.distill_teacher_nols" do_distill "$SRC" "$TGT" "$D" teacher_nols
        fi
        if lskd_stage student_seqkd; then
            lskd_need "$DIR_NAME.$s_sls" "$DIR_NAME.distill_teacher_ls" distill "$D/distill_teacher_ls"
            lskd_need "$DIR_NAME.$s_snols" "$DIR_NAME.distill_teacher_nols" distill "$D/distill_teacher_nols"
            lskd_step "$DIR_NAME.$s_sls" train_student_seqkd "$D" "$s_sls" teacher_ls
            lskd_step "$DIR_NAME.$s_snols" train_student_seqkd "$D" "$s_snols" teacher_nols
        fi
        if lskd_stage evaluate; then
            lskd_evaluate_stage "$DIR_NAME.$(lskd_student_name evaluate)" "$TGT" "$D"
        fi
        if lskd_stage temperature_sweep; then
            sweep="$(lskd_sweep_temperatures)"
            if [ -z "$sweep" ]; then
                lskd_log "temperature_sweep: no temperatures besides KD_TEMPERATURE=$KD_TEMPERATURE (set KD_SWEEP_TEMPERATURES); nothing to do"
            else
                # both teachers before any student, so that a missing one stops the stage at once
                lskd_need "$DIR_NAME.temperature_sweep" "$DIR_NAME.teacher_ls" teacher_ls "$T_LS"
                lskd_need "$DIR_NAME.temperature_sweep" "$DIR_NAME.teacher_nols" teacher_nols "$T_NOLS"
                base_models=("${MODELS[@]}")
                for t in $sweep; do
                    tag="$(lskd_t_tag "$t")"
                    for tn in ls nols; do
                        if [ "$tn" = ls ]; then tck="$T_LS"; else tck="$T_NOLS"; fi
                        sname="$(lskd_student_name "student_wordkd_${tn}_$tag")"
                        lskd_need "$DIR_NAME.$sname" "$DIR_NAME.teacher_$tn" "teacher_$tn" "$tck"
                        lskd_step "$DIR_NAME.$sname" train_student_at "$t" "$D" "$sname" "$D/bin" "$tck"
                        MODELS+=("$sname|teacher_$tn|word top-$KD_TOPK T=$t|$STUDENT_LS|$SEED")
                    done
                done
                lskd_evaluate_stage "$DIR_NAME.$(lskd_student_name evaluate_sweep)" "$TGT" "$D"
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
