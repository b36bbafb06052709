#!/usr/bin/env bash
# GPU checks for the learner kernels: the `gpu`-marked equivalence tests, then the benchmarks at
# learner-sized shapes, one JSON object per line. Needs a CUDA build of torch with triton, and the
# project importable as rlvr (installed here with --no-deps if it is not).
#
#   bash kernels/bench_gpu.sh [OUT_DIR]        # default: $OUT, else ./bench-gpu-results
#
# Shapes: Qwen2.5-0.5B's head (H 896, V 151,936) at the CPU acceptance size; Qwen2.5-7B's head
# (H 3584, V 152,064); Liger's README comparison point (H 4096, V 131,072).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-bench-gpu-results}}
mkdir -p "$out"
py=${PYTHON:-python}
unset TRITON_INTERPRET  # the interpreter would run the kernels on the CPU

"$py" - <<'EOF'
import torch, triton
assert torch.cuda.is_available(), "no CUDA device visible to torch"
print(f"torch {torch.__version__}, triton {triton.__version__}, {torch.cuda.get_device_name()}")
EOF
if ! "$py" -c "import rlvr.kernels" 2>/dev/null; then
    "$py" -m pip install --quiet --no-deps --no-build-isolation -e . \
        || { echo "rlvr is not importable and could not be installed" >&2; exit 1; }
fi
"$py" -m pip list 2>/dev/null | grep -i -E "^(torch|triton|liger)" | tee "$out/versions.txt" || true

if "$py" -c "import pytest" 2>/dev/null; then
    "$py" -m pytest tests/kernels -m "gpu or slow" -q -p no:cacheprovider 2>&1 | tee "$out/gpu-tests.txt" || true
    "$py" -m pytest tests/kernels -q -p no:cacheprovider 2>&1 | tail -3 | tee -a "$out/gpu-tests.txt" || true
else
    echo "pytest not installed: tests skipped" | tee "$out/gpu-tests.txt"
fi

bench() { "$py" -m rlvr.kernels.bench "$@" --repeats 5 --warmup 2 | tee -a "$out/bench.jsonl"; }
for dtype in bfloat16 float32; do
    bench logprobs --tokens 4096 --hidden 896 --vocab 151936 --dtype "$dtype"
    bench logprobs --tokens 8192 --hidden 3584 --vocab 152064 --dtype "$dtype"
    bench logprobs --tokens 8192 --hidden 4096 --vocab 131072 --dtype "$dtype"
done
bench logprobs --tokens 4093 --hidden 896 --vocab 151937 --dtype bfloat16 --temperature 0.7  # ragged tiles
bench policy-loss --batch 256 --seq 4096 --dtype float32
bench policy-loss --batch 256 --seq 4096 --dtype float32 --policy gspo --mismatch tis_seq
bench policy-loss --batch 256 --seq 4093 --dtype bfloat16 --policy cispo --kl-estimator k3+ --mismatch mis  # ragged tiles
bench policy-loss --batch 1024 --seq 8192 --dtype float32 --aggregation seq-mean-token-sum-norm
echo "results in $out"
