#!/usr/bin/env bash
# make gpu-check: exercise lskd's CUDA paths in one short run (target: under 8 minutes on one GPU).
#
#   bash scripts/gpu_check.sh            (or: make gpu-check)
#
# Steps (each prints THROUGHPUT step=<name> value=<x> unit=<u> wall_s=<s>, or FAIL):
#   vision  lskd-vision-train --amp: a ResNet-20 teacher, a ResNet-8 KD student with the online
#           teacher; lskd-vision-cache --fp16 on CUDA; the same student from the cache (its KD loss
#           must match the online student's).                  CIFAR-10, 1,000 images a class, 2 epochs
#   nmt     fairseq-train with the plugin: a teacher (--fp16); word-level KD students with the online
#           teacher under --fp16 and --bf16; lskd-teacher-cache --fp16; students from that cache under
#           --fp16 and --bf16; lskd-distill-data --fp16 and a sequence-level KD student (--fp16).
#           Multi30k en-de, 5,000 sentence pairs, a 3+3-layer d=256 transformer, ~60 updates each
#   study   lskd-study --scale full: the plan (--dry-run); the NMT track run by the study itself at
#           its full model sizes with every run capped by the recipe's own variables (60 updates,
#           2,000 training lines, en-de only, seed 1); and one short epoch (300 images a class) of
#           each vision run kind of the full plan (teacher, long-tailed teacher, no-KD student, KD
#           student, long-tailed KD student), run with the plan's own command lines plus
#           "--epochs 1 --train-per-class 300 --test-split none" (the study has no update cap of
#           its own for vision, so these are the plan's commands, not lskd-study itself)
# Every step fails on a non-zero exit, a missing output, or a non-finite loss; the script goes on
# with the steps that do not depend on a failed one and exits 1 if any failed.
#
# Environment: VENV (.venv), LSKD_SHARED_DATA (../shared/data: cifar10/cifar10_jpg.tar.gz and
# multi30k/), GPU_CHECK_WORK (a fresh folder under /tmp), GPU_CHECK_STEPS ("vision nmt study").
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
VENV=${VENV:-.venv}
PY=$REPO/$VENV/bin/python
if [ ! -x "$PY" ]; then
    echo "gpu-check: $VENV/bin/python not found; run 'make setup' first" >&2
    exit 2
fi
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu-check: no CUDA device is visible to torch; this check needs one GPU (run it on a GPU machine)" >&2
    exit 2
fi
export PATH="$REPO/$VENV/bin:$PATH"
eval "$("$PY" -m lskd_fairseq.warning_filters --shell)"  # library notices by name; other warnings shown
DATA=${LSKD_SHARED_DATA:-$REPO/../shared/data}
CIFAR=$DATA/cifar10/cifar10_jpg.tar.gz
M30K=$DATA/multi30k
WORK=${GPU_CHECK_WORK:-$(mktemp -d /tmp/lskd-gpu-check.XXXXXX)}
STEPS=${GPU_CHECK_STEPS:-vision nmt study}
mkdir -p "$WORK/logs"
LOGS=$WORK/logs
T0=$SECONDS
FAILED=()

"$PY" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'gpu-check: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}')"
echo "gpu-check: work folder $WORK; steps: $STEPS"
for f in "$CIFAR" "$M30K/train.en.gz"; do
    [ -e "$f" ] || { echo "gpu-check: missing data $f (set LSKD_SHARED_DATA)" >&2; exit 2; }
done

# ---------------------------------------------------------------- helpers
# measure.py KIND ARG...: check outputs and losses, print "value unit"; exit 1 with a reason otherwise
cat > "$WORK/measure.py" <<'EOF'
import csv, glob, json, math, os, sys

def fail(msg):
    print(msg)
    sys.exit(1)

def fairseq(log):
    wps, n = [], 0
    for line in open(log, errors="replace"):
        for tag in ("| train_inner |", "| train |", "| valid |"):
            if tag in line:
                rec = json.loads(line.split(tag, 1)[1])
                for k, v in rec.items():
                    if k.endswith("loss") and not math.isfinite(float(v)):
                        fail(f"non-finite {k}={v} in {tag.strip('| ')} record")
                if tag == "| train_inner |":
                    n += 1
                    wps.append(float(rec["wps"]))
    if not n:
        fail("no train_inner records in the log (did training run?)")
    print(f"{sum(wps) / len(wps):.0f} target-tokens/s")

def vision(run):
    m = json.load(open(os.path.join(run, "metrics.json")))
    rows = list(csv.DictReader(open(os.path.join(run, "metrics.csv"))))
    for r in rows:
        for k in ("train_loss", "train_kd_loss", "val_nll_loss"):
            if r.get(k) not in (None, "") and not math.isfinite(float(r[k])):
                fail(f"non-finite {k}={r[k]} at epoch {r['epoch']}")
    seconds = sum(float(r["epoch_time_s"]) for r in rows)
    print(f"{m['dataset']['sizes']['train'] * len(rows) / seconds:.0f} train-images/s(incl.val)")

def vcache(folder):
    h = json.load(open(os.path.join(folder, "cache.json")))
    assert h["complete"] and h["build"]["device"].startswith("cuda"), h["build"]
    print(f"{h['build']['images_per_s']:.0f} views/s")

def same_kd(online, cached):
    a = list(csv.DictReader(open(os.path.join(online, "metrics.csv"))))
    b = list(csv.DictReader(open(os.path.join(cached, "metrics.csv"))))
    ka, kb = float(a[0]["train_kd_loss"]), float(b[0]["train_kd_loss"])
    if not abs(ka - kb) <= 0.02 * abs(ka) + 1e-3:
        fail(f"epoch-1 KD loss online {ka:.5f} vs cached {kb:.5f}: the cache does not hold the student's views")
    print(f"{abs(ka - kb) / max(abs(ka), 1e-9):.5f} relative-KD-difference")

def rate(count, seconds):
    print(f"{float(count) / max(float(seconds), 1.0):.1f} sentences/s")

def wall(seconds):
    print(f"{seconds} s")

KINDS = {"fairseq": fairseq, "vision": vision, "vcache": vcache, "same_kd": same_kd, "rate": rate, "wall": wall}
KINDS[sys.argv[1]](*sys.argv[2:])
EOF

# step NAME MEASURE_KIND MEASURE_ARG -- COMMAND...: run, time, check, print THROUGHPUT or FAIL
step() {
    local name=$1 kind=$2 arg=$3
    shift 4
    local log=$LOGS/$name.log t=$SECONDS rc
    echo "gpu-check: [$(( SECONDS - T0 ))s] $name" >&2
    timeout 420 "$@" >"$log" 2>&1
    rc=$?
    local wall=$(( SECONDS - t ))
    if [ $rc -ne 0 ]; then
        echo "FAIL step=$name exit=$rc wall_s=$wall log=$log"
        tail -n 15 "$log" | sed 's/^/    | /'
        if [[ "$*" == *--bf16* ]] && grep -qi "xla" "$log"; then
            echo "    hint: fairseq 0.12's --bf16 implies --tpu (torch_xla); bf16 on CUDA needs a fairseq_compat fix"
        fi
        FAILED+=("$name")
        return 1
    fi
    local out
    [ "$kind" = rate ] || [ "$kind" = wall ] && arg="$arg $wall"
    # shellcheck disable=SC2086
    if ! out=$("$PY" "$WORK/measure.py" "$kind" $arg 2>&1); then
        echo "FAIL step=$name wall_s=$wall: $out (log: $log)"
        FAILED+=("$name")
        return 1
    fi
    echo "THROUGHPUT step=$name value=${out% *} unit=${out##* } wall_s=$wall"
}

have() { [ -e "$1" ] || { echo "SKIP: $2 (needs $1 from a failed step)"; FAILED+=("$2"); return 1; }; }

# ---------------------------------------------------------------- vision
if [[ " $STEPS " == *" vision "* ]]; then
    V=$WORK/vision
    VDATA=(--train-per-class 1000 --test-split none --workers 8 --no-progress)
    VRUN=(--epochs 2 --batch-size 256 --lr 0.1 --amp "${VDATA[@]}")
    step vision_teacher_amp vision "$V/teacher" -- \
        lskd-vision-train "$CIFAR" --output "$V/teacher" --model resnet20 --label-smoothing 0.1 "${VRUN[@]}"
    T="$V/teacher/checkpoint_best.pt"
    if have "$T" vision_student; then
        KD=(--model resnet8 --seed 1 --kd-alpha 1 --kd-temperature 4)
        step vision_student_online_amp vision "$V/online" -- \
            lskd-vision-train "$CIFAR" --output "$V/online" --teacher "$T" "${KD[@]}" "${VRUN[@]}"
        step vision_cache_cuda_fp16 vcache "$V/cache" -- \
            lskd-vision-cache "$CIFAR" --teacher "$T" --out "$V/cache" --epochs 2 --seed 1 --fp16 \
            --batch-size 1024 "${VDATA[@]}"
        if have "$V/cache/cache.json" vision_student_cached; then
            step vision_student_cached_amp vision "$V/cached" -- \
                lskd-vision-train "$CIFAR" --output "$V/cached" --teacher-cache "$V/cache" "${KD[@]}" "${VRUN[@]}"
            if have "$V/online/metrics.csv" vision_cached_equals_online && have "$V/cached/metrics.csv" vision_cached_equals_online; then
                step vision_cached_equals_online same_kd "$V/online $V/cached" -- true
            fi
        fi
    fi
fi

# ---------------------------------------------------------------- nmt (fairseq plugin)
if [[ " $STEPS " == *" nmt "* ]]; then
    N=$WORK/nmt
    mkdir -p "$N/text"
    "$PY" - "$M30K" "$N/text" <<'EOF'
import gzip, re, sys
src, dest = sys.argv[1:]
def tok(line):
    return " ".join(re.sub(r"([.,!?;:\"()])", r" \1 ", line.strip().lower()).split())
for split, name, n in (("train", "train", 5000), ("valid", "val", 200), ("test", "test_2016_flickr", 200)):
    for lang in ("en", "de"):
        with gzip.open(f"{src}/{name}.{lang}.gz", "rt", encoding="utf-8") as f:
            lines = [tok(next(f)) for _ in range(n)]
        open(f"{dest}/{split}.{lang}", "w", encoding="utf-8").write("\n".join(lines) + "\n")
EOF
    fairseq-preprocess --source-lang en --target-lang de --trainpref "$N/text/train" --validpref "$N/text/valid" \
        --testpref "$N/text/test" --destdir "$N/bin" --joined-dictionary --thresholdsrc 2 --thresholdtgt 2 \
        --workers 8 >"$LOGS/nmt_preprocess.log" 2>&1 || { echo "FAIL step=nmt_preprocess log=$LOGS/nmt_preprocess.log"; FAILED+=(nmt_preprocess); }
    ARCH=(--arch transformer --encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 256 --decoder-embed-dim 256
          --encoder-ffn-embed-dim 1024 --decoder-ffn-embed-dim 1024 --encoder-attention-heads 4
          --decoder-attention-heads 4 --share-all-embeddings)
    TRAIN=(--optimizer adam --adam-betas "(0.9,0.98)" --lr 5e-4 --lr-scheduler inverse_sqrt --warmup-updates 40
           --max-tokens 4096 --dropout 0.1 --no-epoch-checkpoints --save-interval 1000 --log-format json
           --log-interval 10 --seed 1 --num-workers 2 --max-update 60)
    PLUGIN=(--user-dir "$REPO/lskd_fairseq" --task translation_kd)
    KDW=(--criterion label_smoothed_kd --label-smoothing 0.1 --kd-alpha 0.5 --kd-temperature 2)
    if have "$N/bin/dict.en.txt" nmt_teacher; then
        step nmt_teacher_fp16 fairseq "$LOGS/nmt_teacher_fp16.log" -- \
            fairseq-train "$N/bin" "${ARCH[@]}" "${TRAIN[@]}" --max-update 200 --fp16 \
            --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --save-dir "$N/teacher"
    fi
    NT="$N/teacher/checkpoint_last.pt"
    if have "$NT" nmt_students; then
        for prec in fp16 bf16; do
            topk=0; [ $prec = bf16 ] && topk=8
            step "nmt_wordkd_online_$prec" fairseq "$LOGS/nmt_wordkd_online_$prec.log" -- \
                fairseq-train "$N/bin" "${PLUGIN[@]}" "${ARCH[@]}" "${TRAIN[@]}" "--$prec" "${KDW[@]}" \
                --kd-topk $topk --teacher-path "$NT" --save-dir "$N/online_$prec"
        done
        for split in train valid; do
            step "nmt_teacher_cache_fp16_$split" rate 5000 -- \
                lskd-teacher-cache "$N/bin" --split $split --out "$N/cache" --teacher-path "$NT" --k 8 --fp16 \
                --max-tokens 8192 --no-progress-bar
        done
        if have "$N/cache/train.topk.json" nmt_cached && have "$N/cache/valid.topk.json" nmt_cached; then
            for prec in fp16 bf16; do
                step "nmt_wordkd_cached_$prec" fairseq "$LOGS/nmt_wordkd_cached_$prec.log" -- \
                    fairseq-train "$N/bin" "${PLUGIN[@]}" "${ARCH[@]}" "${TRAIN[@]}" "--$prec" "${KDW[@]}" \
                    --kd-topk 8 --teacher-cache "$N/cache" --save-dir "$N/cached_$prec"
            done
        fi
        step nmt_distill_data_fp16 rate 5000 -- \
            lskd-distill-data "$N/bin" --out "$N/distill" --teacher-path "$NT" --source-text "$N/text/train.en" \
            --target-text "$N/text/train.de" --beam 4 --max-len-a 1.2 --max-len-b 10 --max-tokens 8192 --fp16 \
            --no-progress-bar
        if have "$N/distill/train.distill.json" nmt_seqkd; then
            step nmt_seqkd_fp16 fairseq "$LOGS/nmt_seqkd_fp16.log" -- \
                fairseq-train "$N/bin" "${PLUGIN[@]}" "${ARCH[@]}" "${TRAIN[@]}" --fp16 --disable-validation \
                --distilled-data "$N/distill" --criterion sequence_distillation --label-smoothing 0.1 \
                --save-dir "$N/seqkd"
        fi
    fi
fi

# ---------------------------------------------------------------- study at full scale
if [[ " $STEPS " == *" study "* ]]; then
    S=$WORK/study
    step study_full_plan wall "" -- lskd-study --scale full --out "$S" --data "$DATA" --dry-run
    # the NMT track through lskd-study itself, every run capped by the recipe's variables
    step study_full_nmt_capped wall "" -- env MAX_UPDATE_TEACHER=60 MAX_UPDATE_STUDENT=60 WARMUP=20 \
        TRAIN_LINES=2000 VALID_LINES=100 TEST_LINES=50 DIRECTIONS=en-de BEAM=2 \
        lskd-study --scale full --only nmt --seeds 1 --jobs 3 --out "$S" --data "$DATA" --heartbeat 60
    # one short epoch of each vision run kind, with the full plan's own command lines
    if have "$LOGS/study_full_plan.log" study_vision; then
        for id in teacher_nols lt_teacher_nols student_nokd_seed1 student_nols_T4_seed1 lt_student_nols_T1_seed1; do
            cmd=$(grep -A1 " vision/$id:" "$LOGS/study_full_plan.log" | tail -n 1)
            if [ -z "$cmd" ]; then
                echo "FAIL step=study_vision_$id: vision/$id is not in the full plan"; FAILED+=("study_vision_$id"); continue
            fi
            out=$(sed -n 's/.*--output \([^ ]*\).*/\1/p' <<<"$cmd")
            # shellcheck disable=SC2086
            step "study_vision_$id" vision "$out" -- $cmd --epochs 1 --train-per-class 300 --test-split none
        done
    fi
fi

# ---------------------------------------------------------------- summary
total=$(( SECONDS - T0 ))
echo "gpu-check: finished in ${total}s (target < 480s); logs in $LOGS"
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "gpu-check: FAILED: ${FAILED[*]}"
    exit 1
fi
echo "gpu-check: all steps passed"
