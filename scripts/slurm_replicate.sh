#!/bin/bash
# The paper's run on SLURM: 2 nodes of 8 GPUs (4 column pairs each), preemptible and requeued.
# Submit with `sbatch scripts/slurm_replicate.sh` from the repository; edit the paths and sizes.
#
# - --signal=B:TERM@180: SLURM sends SIGTERM to this script 3 minutes before the time limit; it
#   passes it on (srun to torchrun, torchrun to its workers), the workers agree on a batch, save
#   the checkpoint there and exit. torchrun's --shutdown-timeout is how long it waits for them
#   (SIGKILL after). Then the script requeues the job.
# - --requeue: a preempted job goes back in the queue (SLURM sends SIGTERM first, the same way).
#   Either way the same command runs again and continues from the checkpoint.
# - The run folder (--out) must be on a filesystem every node shares; the cache may be a copy
#   on each node's local disk (the run checks that every node's holds the same data).
#
#SBATCH --job-name=alexnet2012
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --signal=B:TERM@180
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=alexnet2012-%j.log

export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1  # a new store for each attempt: restarts reconnect
DATA=${DATA:-/data/imagenet_cache}
OUT=${OUT:-/shared/runs/alexnet2012}
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)

stopping=0
trap 'stopping=1; kill -TERM "$job" 2>/dev/null' TERM
srun torchrun \
  --nnodes "$SLURM_NNODES" --nproc-per-node 4 \
  --rdzv-backend c10d --rdzv-endpoint "$head_node:29500" --rdzv-id "$SLURM_JOB_ID" \
  --max-restarts 3 --shutdown-timeout 120 \
  scripts/replicate.py --data "$DATA" --out "$OUT" --devices-per-replica 2 &
job=$!
wait "$job"
status=$?
if [ "$stopping" = 1 ]; then  # the trap ended the first wait: wait for the checkpoint
  wait "$job"
  status=$?
  if [ ! -f "$OUT/results.json" ]; then
    scontrol requeue "$SLURM_JOB_ID"  # the same command continues the run
  fi
fi
exit $status
