#!/bin/bash
# sbatch wrapper of scripts/cluster_job.py: the DRIVER job of an atlasloader cluster job.
#
#   sbatch scripts/slurm_job.sh a.h5ad b.h5ad [more cluster_job.py options]
#
# This job is small: it runs the dask scheduler and the pipeline's bookkeeping. The work runs
# in WORKER jobs that dask-jobqueue's SLURMCluster submits from inside it (cluster.scale(jobs=
# JOBS)), each with CORES cores and MEMORY memory for WALLTIME; they stop when this job ends.
# Needs `pip install dask-jobqueue` in the environment (not an atlasloader dependency), and
# the inputs and OUT on a file system every node sees.
#
# Settings (environment variables, e.g. `JOBS=16 MEMORY=64GB sbatch scripts/slurm_job.sh ...`):
#   VENV      the virtual environment with atlasloader (default: ./.venv)
#   OUT       output directory (default: /scratch/$USER/atlasloader-$SLURM_JOB_ID)
#   JOBS, CORES, MEMORY, WALLTIME   worker jobs and the resources of each (default 4, 8, 32GB,
#             02:00:00)
#   QUEUE, ACCOUNT                  partition and account of the worker jobs
#
# Without dask-jobqueue, start the workers inside ONE allocation instead, and point
# atlasloader at the scheduler file (every command takes --scheduler FILE):
#   #SBATCH --ntasks=9 --cpus-per-task=8 --mem-per-cpu=4G
#   SCHED=$OUT/scheduler.json
#   srun --ntasks=1 --exclusive dask scheduler --scheduler-file "$SCHED" &
#   srun --ntasks=8 --exclusive dask worker --scheduler-file "$SCHED" --nthreads 8 \
#       --memory-limit 30GB --local-directory "$TMPDIR" &
#   atlasloader convert a.h5ad b.h5ad "$OUT/atlas.zarr" --scheduler "$SCHED"
#   atlasloader preprocess "$OUT/atlas.zarr" --scheduler "$SCHED"
#   atlasloader setup "$OUT/atlas.zarr" --batch-key batch --scheduler "$SCHED"
#
#SBATCH --job-name=atlasloader-driver
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=04:00:00
#SBATCH --output=atlasloader-driver-%j.log
set -euo pipefail

VENV=${VENV:-.venv}
OUT=${OUT:-/scratch/$USER/atlasloader-${SLURM_JOB_ID:-local}}
# shellcheck disable=SC1091
source "$VENV/bin/activate"

args=(--out "$OUT" --slurm
  --jobs "${JOBS:-4}" --cores "${CORES:-8}" --memory "${MEMORY:-32GB}"
  --walltime "${WALLTIME:-02:00:00}")
if [[ -n ${QUEUE:-} ]]; then args+=(--queue "$QUEUE"); fi
if [[ -n ${ACCOUNT:-} ]]; then args+=(--account "$ACCOUNT"); fi

python scripts/cluster_job.py "$@" "${args[@]}"
