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

# lskd_params_json CKPT: parameter count of a checkpoint (for reports).
lskd_have() { command -v "$1" > /dev/null 2>&1; }
