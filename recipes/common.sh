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
# use the project's virtual environment when none is active
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f "$LSKD_REPO/.venv/bin/activate" ]; then
    # shellcheck disable=SC1091
    . "$LSKD_REPO/.venv/bin/activate"
fi
# the libraries' notices a user cannot act on are silenced by name (lskd_fairseq.warning_filters);
# every other warning is shown
eval "$(PYTHONPATH="$LSKD_REPO${PYTHONPATH:+:$PYTHONPATH}" python -m lskd_fairseq.warning_filters --shell)"

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
lskd_in_stages() {  # lskd_in_stages NAME: is stage NAME between STAGE and STOP_STAGE (silent)
    local i
    i="$(lskd_stage_index "$1")"
    [ "$i" -ge "$(lskd_stage_index "${STAGE:-1}")" ] && [ "$i" -le "$(lskd_stage_index "${STOP_STAGE:-1000}")" ]
}

lskd_stage() {
    if lskd_in_stages "$1"; then
        lskd_log "== stage $(lskd_stage_index "$1"): $1"
        return 0
    fi
    return 1
}

lskd_done() { [ -e "$WORK/.done/$1" ] && [ "${FORCE:-0}" != 1 ]; }

# lskd_need STEP PRODUCER STAGE [PATH]: before STEP runs (unless it is done), refuse in one
# line when the step PRODUCER (of stage STAGE) has not finished or PATH, which it made, is
# missing; the message names the stage to run first.
lskd_need() {
    local step="$1" producer="$2" stage="$3" path="${4:-}"
    if lskd_done "$step"; then return 0; fi
    if [ ! -e "$WORK/.done/$producer" ]; then
        lskd_die "$step needs $producer, which has not finished in $WORK: run --stage $stage first"
    fi
    if [ -n "$path" ] && [ ! -e "$path" ]; then
        lskd_die "$step needs $path (made by $producer), which is missing: run --stage $stage --force 1 first"
    fi
}

# lskd_step STEP CMD...: run CMD (a command or shell function) unless STEP is done;
# its output goes to $WORK/logs/STEP.log; the marker is written last.
lskd_step() {
    local step="$1"; shift
    if lskd_done "$step"; then
        lskd_log "skip $step (done: $WORK/.done/$step)"
        return 0
    fi
    local t0 t1
    t0=$(date +%s)
    lskd_run_logged "$step" "$@"
    t1=$(date +%s)
    mkdir -p "$WORK/.done"
    echo "$((t1 - t0))" > "$WORK/.done/.$step.tmp"
    mv "$WORK/.done/.$step.tmp" "$WORK/.done/$step"
    lskd_log "done $step in $((t1 - t0)) s"
}

# lskd_run_logged STEP CMD...: run CMD with its output in $WORK/logs/STEP.log (no marker);
# on failure show the log's tail and stop.
lskd_run_logged() {
    local step="$1"; shift
    mkdir -p "$WORK/logs"
    local log="$WORK/logs/$step.log"
    lskd_log "run  $step (log: $log)"
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
}

# Device: CUDA when torch sees it (fp16 unless FP16=no; fairseq spreads training
# over all visible GPUs by itself), otherwise CPU. BF16=auto|yes|no: bfloat16 training
# (fairseq's --bf16, made to work off TPUs by lskd_fairseq.fairseq_compat) and bfloat16
# teachers in lskd-distill-data / lskd-teacher-cache. auto: on CPU when it has bf16
# hardware (AMX), never on CUDA (fp16 stays); yes: always (on CUDA instead of fp16).
# LSKD_DEVICE_ARGS go to fairseq-train, LSKD_GEN_DEVICE_ARGS to fairseq-generate and
# evaluation (no bf16: test decoding stays as it was), LSKD_TOOL_DEVICE_ARGS to the lskd tools.
lskd_detect_device() {
    if [ "${DEVICE:-auto}" = auto ]; then
        if python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
            DEVICE=cuda
        else
            DEVICE=cpu
        fi
    fi
    local bf16=0
    case "${BF16:-auto}" in
        yes) bf16=1 ;;
        no) ;;
        auto)
            if [ "$DEVICE" != cuda ] && python -c 'import torch,sys; sys.exit(0 if torch.cpu._is_amx_tile_supported() else 1)' 2>/dev/null; then
                bf16=1
            fi ;;
        *) lskd_die "BF16 must be auto, yes or no (got ${BF16})" ;;
    esac
    NGPU=0
    if [ "$DEVICE" = cuda ]; then
        NGPU="$(python -c 'import torch; print(torch.cuda.device_count())')"
        LSKD_DEVICE_ARGS=""
        if [ "$bf16" = 1 ]; then LSKD_DEVICE_ARGS="--bf16"
        elif [ "${FP16:-auto}" != no ]; then LSKD_DEVICE_ARGS="--fp16"; fi
        LSKD_GEN_DEVICE_ARGS="$LSKD_DEVICE_ARGS"
        LSKD_TOOL_DEVICE_ARGS="$LSKD_DEVICE_ARGS"
    else
        LSKD_DEVICE_ARGS="--cpu"
        LSKD_GEN_DEVICE_ARGS="--cpu"
        LSKD_TOOL_DEVICE_ARGS="--cpu"
        if [ "$bf16" = 1 ]; then LSKD_DEVICE_ARGS="--cpu --bf16"; LSKD_TOOL_DEVICE_ARGS="--cpu --bf16"; fi
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
        $LSKD_DEVICE_ARGS $LSKD_BATCH_FIX --no-epoch-checkpoints --log-format simple --seed "${TRAIN_SEED:-${SEED:-1}}" "$@" || {
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

# the NMT pipeline (stages, training, distillation, evaluation) every NMT recipe runs
# shellcheck disable=SC1091
. "$LSKD_REPO/recipes/nmt_pipeline.sh"
