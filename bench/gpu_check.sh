#!/usr/bin/env bash
# The whole GPU check of issue 10 in one go (about 7-8 minutes on one H200): the GPU levers' correctness tests,
# then ours vs the reference's math at equal settings, lever by lever, then torch.compile (cold, inductor).
#
# On the device machine our dependencies are not installed; its image has torch, accelerate, safetensors,
# huggingface_hub, transformers, numpy and OpenCV, so the bench needs only diffusers. Once, in the repository
# root of the machine you call from (.whl/ is git-ignored):
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl diffusers==0.42.1
#
# then run it with the device tool: command `bash bench/gpu_check.sh`, carry [".whl"], timeout_s 590.
# Results land in $OUT (or out/gpu_check here): env.txt, pytest.log, levers.jsonl, compile.jsonl and the two
# benches' logs (the compile messages). Each step has its own time limit and the JSON lines are written as each
# mode ends, so a slow step still leaves what it measured. WINDOWS / STEPS override the bench size; BENCH_ARGS adds
# bench flags (a dry run on a CPU: BENCH_ARGS="--tiny --device cpu --resolution 64 --compile-backend eager").
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-out/gpu_check}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
WINDOWS="${WINDOWS:-4}"
STEPS="${STEPS:-20}"
read -r -a EXTRA <<<"${BENCH_ARGS:-}"
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH="/tmp/site"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$PY" -c "import torch, diffusers; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'cudnn', torch.backends.cudnn.version(), 'diffusers', diffusers.__version__)"
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

step() {  # step NAME SECONDS COMMAND...: run with a time limit, keep going whatever happens
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s)" >&2
    local t0=$SECONDS
    timeout "$limit" "$@"
    echo "== $name: exit $? after $((SECONDS - t0)) s" >&2
}

# 1. correctness on the GPU: CUDA graphs and channels-last against eager (fp32 and fp16), plus the CPU tests
step tests 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_accel.py -m "not slow" 2>&1 | tee "$OUT/pytest.log"

# 2. ours vs the reference (eager, no DeepCache, one window per batch, VAE slice 16), each lever alone, then together
step levers 210 "$PY" bench/gpu.py "${EXTRA[@]}" --windows "$WINDOWS" --steps "$STEPS" --modes \
    reference,ours,ours+cudnn_benchmark,ours+channels_last,ours+cuda_graphs,ours+vae_tiling,ours+channels_last+cudnn_benchmark+cuda_graphs,deepcache \
    >"$OUT/levers.jsonl" 2>"$OUT/levers.log"
cat "$OUT/levers.jsonl"

# 3. torch.compile (inductor, cold cache: the first pass includes the compile), alone and with CUDA graphs
step compile 240 "$PY" bench/gpu.py "${EXTRA[@]}" --windows "$WINDOWS" --steps "$STEPS" \
    --modes reference,ours+compile,ours+compile+cuda_graphs+cudnn_benchmark \
    --compile-cache-dir /tmp/latentsync_compile_cache >"$OUT/compile.jsonl" 2>"$OUT/compile.log"
cat "$OUT/compile.jsonl"
ls -la /tmp/latentsync_compile_cache 2>/dev/null | tee -a "$OUT/env.txt"
