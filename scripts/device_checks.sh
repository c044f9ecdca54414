#!/usr/bin/env bash
usage=$(cat <<'EOF'
usage: scripts/device_checks.sh [--small] OUT_DIR

Every check that needs a CUDA GPU, in one run of at most 7 minutes, the most informative first:
  1 smoke      versions, fused ops vs reference (fp32, bf16), a step per placement, a compiled
               step                                                      -> smoke.json
  2 CUDA tests pytest -m cuda                                            -> pytest_cuda.log
  3 benchmark  batch 128, fp32/TF32, with the cost model                 -> bench_b128.json
  4 demo data  the synthetic set, generated and prepared once (experiments/demo_data)
  5 end to end batch 128, bf16 + torch.compile, the loader included      -> bench_e2e.json
  6 replicate  the demo, bf16 + compile, 3 epochs                        -> runs.tar.gz
  7 torchrun   2 replicas sharing the GPU, 1 epoch                       -> runs.tar.gz
  8 data       the data stages, raw and JPEG (nvJPEG) caches            -> data.json
  9 figures    Figures 3 and 4 from the first run                       -> runs.tar.gz
 10 scaling    torchrun over every GPU (2 or more only)                 -> replicas.json
Each stage has its own time limit (they add up to 410 s) and writes its results as it ends;
runs live in OUT_DIR/runs (checkpoints removed after the figures), so a run cut at any point
keeps what it did. log.txt holds everything printed. At most 8 files are left in OUT_DIR.

OUT_DIR    a new or empty folder (made if missing)
--small    the plumbing on the CPU, as the test suite runs it: the same stages and options at
           tiny sizes, torch.compile only in the smoke stage (aot_eager), 5x the time limits
           (a shared CPU may be slow)
PYTHON     the interpreter (default: python3); it must import torch. Installs nothing.
EOF
)

small=0
case "${1:-}" in
  -h | --help) echo "$usage"; exit 0 ;;
  --small) small=1; shift ;;
esac
if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "error: give exactly one OUT_DIR (got $#: $*); see --help" >&2
  exit 2
elif [ "${1#-}" != "$1" ]; then
  echo "error: unknown option $1 (options: --small, --help); see --help" >&2
  exit 2
fi
out=$1
if [ -e "$out" ] && { [ ! -d "$out" ] || [ -n "$(ls -A "$out")" ]; }; then
  echo "error: $out exists and is not an empty folder: give a new one" >&2
  exit 2
fi
python=${PYTHON:-python3}
if ! "$python" -c "import torch" 2>/dev/null; then
  echo "error: $python cannot import torch: set PYTHON to the interpreter that has it" >&2
  exit 2
fi
set -uo pipefail
mkdir -p "$out" && out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
runs=$out/runs
mkdir -p "$runs"
exec > >(tee -a "$out/log.txt") 2>&1
tee_pid=$!

if [ "$small" = 1 ]; then  # tiny sizes on the CPU: proves the command lines and the files
  device=cpu gpus=0 backend=aot_eager batch=4 data=$runs/data/cache workers=0 stretch=5
  bench=(--steps 1 --warmup 0 --repeats 1) run=(--data "$data" --batch-size 8 --workers 0)
  compile=() epochs=1
else
  device=${DEVICE:-cuda:0} backend=inductor batch=128 data=experiments/demo_data/cache workers=8
  stretch=1
  gpus=$("$python" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
  bench=() run=(--workers "$workers") compile=(--compile) epochs=3
fi

stage() {  # stage NAME SECONDS COMMAND...: run with a time limit, report its status and time
  local name=$1 limit=$(($2 * stretch)) start=$SECONDS
  shift 2
  echo "=== $name (limit ${limit}s) $(date -u +%H:%M:%S)"
  timeout -k 5 "$limit" "$@"
  echo "=== $name: exit $? after $((SECONDS - start))s"
}
pack() {  # the run folders so far, without checkpoints, into runs.tar.gz
  tar -czf "$out/runs.tar.gz.tmp" -C "$runs" --exclude='*checkpoint*' --exclude='*.tmp' \
    --exclude=data . && mv "$out/runs.tar.gz.tmp" "$out/runs.tar.gz"
}

stage smoke 55 "$python" scripts/smoke.py "$out/smoke.json" --devices "$device" \
  --batch-size $((batch < 32 ? batch : 32)) --compile-backend "$backend"
stage "CUDA tests" 65 bash -c "set -o pipefail; '$python' -m pytest -m cuda -p no:cacheprovider \
  -n 0 -q 2>&1 | tee '$out/pytest_cuda.log'"
stage "benchmark, batch $batch, fp32/TF32, cost model" 40 "$python" scripts/benchmark.py \
  --devices "$device" --batch-size "$batch" "${bench[@]}" --cost --quiet \
  --json "$out/bench_b128.json"
stage "demo data" 35 "$python" -c "import sys
from alexnet2012.data import make_synthetic_imagenet, prepare_cache
from alexnet2012.sources import demo_cache
if sys.argv[1] == '1':  # --small: 2 classes in OUT_DIR/runs/data
    make_synthetic_imagenet(sys.argv[2] + '/images', classes=2, train_per_class=8,
                            val_per_class=2, seed=0, workers=1)
    prepare_cache(sys.argv[2] + '/images', sys.argv[2] + '/cache', workers=1, progress=False)
else:
    demo_cache(workers=8, progress=False)" "$small" "$runs/data"
stage "end to end, batch $batch, bf16 ${compile[*]}" 65 "$python" scripts/benchmark.py \
  --devices "$device" --batch-size "$batch" "${bench[@]}" --bf16 "${compile[@]}" \
  --data "$data" --workers "$workers" --quiet --json "$out/bench_e2e.json"
stage "replication on $device, bf16 ${compile[*]}, $epochs epochs" 40 "$python" \
  scripts/replicate.py --devices "$device" --bf16 "${compile[@]}" --epochs "$epochs" \
  "${run[@]}" --out "$runs/one-device" --quiet
pack
stage "torchrun: 2 replicas on $device, 1 epoch" 35 "$python" -m torch.distributed.run \
  --standalone --nproc-per-node 2 scripts/replicate.py --devices "$device" --epochs 1 \
  "${run[@]}" --out "$runs/two-replicas" --quiet
pack
stage "data stages, raw and JPEG caches" 30 "$python" scripts/benchmark_data.py \
  --data "$data" --devices "$device" --batch-size "$batch" --batches $((small ? 1 : 30)) \
  --json "$out/data.json"
stage "figures 3 and 4 from the first run" 20 "$python" scripts/figures.py "$runs/one-device" \
  --devices "$device" --workers "$workers"
pack
if [ "$gpus" -ge 2 ]; then
  stage "torchrun: $gpus replicas, scaling at batch 128" 25 "$python" -m torch.distributed.run \
    --standalone --nproc-per-node "$gpus" scripts/benchmark.py --batch-size 128 \
    --json "$out/replicas.json"
fi
find "$runs" -name '*checkpoint*' -delete 2>/dev/null
pack && rm -rf "$runs"
echo "=== done $(date -u +%H:%M:%S)"
exec >&- 2>&-  # end tee's input, then give it up to 10 s to write the rest of log.txt (a stray
for _ in {1..100}; do  # process still holding the pipe must not hang the script)
  kill -0 "$tee_pid" 2>/dev/null || break
  sleep 0.1
done
