#!/usr/bin/env bash
# Every GPU figure of issue 14 in one run, on the configured device (UNLEARN_DEVICE; the
# device machine's setup.sh sets cuda). Each step is capped with `timeout` and the whole
# suite with SUITE_BUDGET_S; one failing step does not lose the others' results. Results
# (reports and logs) land under $OUT, with the card's name in $OUT/gpu.txt.
#
# On the device machine (from the project root, after `bash ../shared/device/bundle.sh`):
#     source .devbundle/setup.sh && bash benchmarks/gpu_suite.sh
# Rehearsal on a CPU machine with small settings:
#     UNLEARN_DEVICE=cpu SUITE_SMALL=1 OUT=/tmp/suite bash benchmarks/gpu_suite.sh
set -uo pipefail

OUT="${OUT:-$PWD/gpu-suite-out}"
mkdir -p "$OUT"
PYTHON="${PYTHON:-python3}"
BUDGET="${SUITE_BUDGET_S:-420}"   # the whole suite; steps get what is left of it
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."

if [[ "${SUITE_SMALL:-0}" == 1 ]]; then   # rehearsal: tiny data and few rounds
    export UNLEARN_DATA_SUBSET="${UNLEARN_DATA_SUBSET:-3000,500}"
    THROUGHPUT_ARGS=(--rounds 3 --single 20)
    CONCURRENCY_ARGS=(--seconds 1 --rounds 1)
    LATENCY_ARGS=(--requests 3)
    METHOD_ARGS=(--repeats 2 --sisa-shards 2 --sisa-slices 2 --fisher-samples 100)
    PYTEST_FILTER=(-k "not sisa and not training")
else
    THROUGHPUT_ARGS=(--rounds 30 --single 200)
    CONCURRENCY_ARGS=(--seconds 5 --rounds 3)
    LATENCY_ARGS=(--requests 30)
    METHOD_ARGS=(--repeats 3)
    PYTEST_FILTER=()
fi

step() {  # step NAME CAP_SECONDS COMMAND...: run with the smaller of CAP and what is left
    local name="$1" cap="$2"
    shift 2
    local left=$((BUDGET - SECONDS))
    local limit=$((cap < left ? cap : left))
    if ((limit < 10)); then
        echo "== $name: skipped, the suite's budget of ${BUDGET}s is spent" | tee -a "$OUT/summary.txt"
        return
    fi
    echo "== $name (cap ${limit}s)"
    local started=$SECONDS
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.txt" 2>&1
    local status=$?
    tail -n 25 "$OUT/$name.txt"
    echo "== $name: exit $status after $((SECONDS - started))s" | tee -a "$OUT/summary.txt"
}

{
    date -u +"run at %Y-%m-%dT%H:%M:%SZ"
    echo "UNLEARN_DEVICE=${UNLEARN_DEVICE:-cpu} SUITE_SMALL=${SUITE_SMALL:-0}"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null \
        || echo "nvidia-smi: none"
    "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
"device:", torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA")'
    nproc | sed 's/^/cpu cores: /'
} > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
: > "$OUT/summary.txt"

# Device-correctness first (CUDA vs CPU answers), then the figures.
step pytest_device 120 "$PYTHON" -m pytest -q -x -p no:cacheprovider tests/test_device.py \
    "${PYTEST_FILTER[@]}"
step predict_throughput 90 "$PYTHON" benchmarks/predict_throughput.py "${THROUGHPUT_ARGS[@]}" \
    --result "$OUT/predict_throughput.md"
step predict_concurrency 90 "$PYTHON" benchmarks/predict_concurrency.py "${CONCURRENCY_ARGS[@]}" \
    --result "$OUT/predict_concurrency.md"
step forget_latency 90 "$PYTHON" benchmarks/forget_latency.py "${LATENCY_ARGS[@]}" \
    --engines sqlite --result "$OUT/forget_latency.md"
# Bring-your-own models: resnet18 on Fashion-MNIST (UNLEARN_FASHION_MNIST_DIR) trained by
# the service, then class forget requests against its retrain (issue 9's GPU figures).
if [[ -n "${UNLEARN_FASHION_MNIST_DIR:-}" ]]; then
    step byo_models "${BYO_CAP_S:-240}" "$PYTHON" benchmarks/byo_models.py --archs resnet18 \
        --resnet-subset full --epochs "${BYO_EPOCHS:-3}" --requests 5
    cp benchmarks/results/byo_models_cuda.md "$OUT/" 2>/dev/null || true
fi

step method_speed 150 "$PYTHON" benchmarks/method_speed.py "${METHOD_ARGS[@]}" \
    --result "$OUT/method_speed.md"

echo "== suite done in ${SECONDS}s; results in $OUT" | tee -a "$OUT/summary.txt"
