#!/usr/bin/env bash
# The checks that need a CUDA GPU, most important first: the CUDA tests (the fused Triton kernels
# against the reference path included), the benchmark at batch 128 in fp32/TF32 with the cost
# model beside it, the benchmark in bf16 + torch.compile with the end-to-end row from the cache
# (the 10,000 images/s target), a short replication on one GPU in bf16 + compile and one on the
# two-device path (column 0 on the GPU, column 1 on the CPU), the data stages of the raw and the
# JPEG cache (nvJPEG decoding into the model's input) beside torchvision's ImageFolder path; then
# torchrun: two replicas sharing the GPU for one epoch (correctness), the replicas' scaling where
# there are 2+ GPUs, and the paper's figures from the first run's checkpoint. The demo data is
# gitignored, so a first stage generates and prepares it (the JPEG cache: the data stage, in a
# temporary folder). The stage limits below (plus 10 s of kill grace each) bound the run; past
# the run tool's 10 minutes the last stages are the ones cut.
#
#   scripts/device_checks.sh OUT_DIR
#
# Runs from the repository root with the python3 on PATH (torch, torchvision, numpy, scipy,
# pillow, pytest, triton; installs nothing). Writes at most 8 files to OUT_DIR: log.txt
# (everything printed), pytest_cuda.log, bench_b128.json, bench_b128_bf16_compile.json,
# data_cuda.json, replicas.json (2+ GPUs) and runs.tar.gz (the run folders without checkpoints,
# the figures in the first). Each stage has its
# own time limit, so that one that hangs leaves the rest their time. DEVICE=cpu runs the same on
# the CPU (slowly).
set -uo pipefail
out=${1:?usage: scripts/device_checks.sh OUT_DIR}
device=${DEVICE:-cuda:0}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
runs=$(mktemp -d)
exec > >(tee -a "$out/log.txt") 2>&1
tee_pid=$!

stage() {  # stage NAME SECONDS COMMAND...: run with a time limit, report its status and time
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  echo "=== $name (limit ${limit}s) $(date -u +%H:%M:%S)"
  timeout -k 10 "$limit" "$@"
  echo "=== $name: exit $? after $((SECONDS - start))s"
}

stage environment 15 bash -c 'nvidia-smi || true; python3 -c "import torch, torchvision;
print(torch.__version__, torchvision.__version__, torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else \"no GPU\")"'
stage "demo data" 45 python3 -c "from alexnet2012.sources import demo_cache
demo_cache(workers=8, progress=False)"
stage "CUDA tests" 90 bash -c "set -o pipefail; python3 -m pytest -m cuda -p no:cacheprovider \
  2>&1 | tee '$out/pytest_cuda.log'"
stage "benchmark, batch 128, and the cost model" 60 python3 scripts/benchmark.py \
  --devices "$device" --batch-size 128 --cost --quiet --json "$out/bench_b128.json"
stage "benchmark, batch 128, bf16 + compile, end to end" 120 python3 scripts/benchmark.py \
  --devices "$device" --batch-size 128 --bf16 --compile --data experiments/demo_data/cache \
  --workers 8 --quiet --json "$out/bench_b128_bf16_compile.json"
stage "replication on $device, bf16 + compile" 75 python3 scripts/replicate.py \
  --devices "$device" --bf16 --compile --out "$runs/one-device" --quiet
stage "replication on $device,cpu, 1 epoch" 50 python3 scripts/replicate.py \
  --devices "$device,cpu" --epochs 1 --out "$runs/two-device" --quiet
stage "data stages, raw and JPEG (GPU decode) caches, torchvision" 70 \
  python3 scripts/benchmark_data.py --cache experiments/demo_data/cache --device "$device" \
  --json "$out/data_cuda.json"
stage "torchrun: 2 replicas on $device (gloo), 1 epoch" 60 python3 -m torch.distributed.run \
  --standalone --nproc-per-node 2 scripts/replicate.py --devices "$device" --epochs 1 \
  --out "$runs/two-replicas" --quiet
gpus=$(python3 -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
if [ "$gpus" -ge 2 ]; then
  stage "torchrun: $gpus replicas, scaling at batch 128" 60 python3 -m torch.distributed.run \
    --standalone --nproc-per-node "$gpus" scripts/benchmark.py --batch-size 128 \
    --json "$out/replicas.json"
fi
stage "figures 3 and 4 from the first run" 40 python3 scripts/figures.py "$runs/one-device" \
  --devices "$device"
timeout 20 tar -czf "$out/runs.tar.gz" -C "$runs" --exclude='*checkpoint*' --exclude='*.tmp' . \
  && rm -rf "$runs"
echo "=== done $(date -u +%H:%M:%S)"
exec >&- 2>&-  # end tee's input, then give it up to 10 s to write the rest of log.txt (a stray
for _ in {1..100}; do  # process still holding the pipe must not hang the script)
  kill -0 "$tee_pid" 2>/dev/null || break
  sleep 0.1
done
