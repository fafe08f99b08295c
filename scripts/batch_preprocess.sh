#!/usr/bin/env bash
# End-to-end batch preprocessing with the atlasloader command line:
#
#   .h5ad files --convert--> one store --preprocess--> size factors, gene statistics,
#   highly variable genes --setup--> registered (SCVI.setup_anndata) --validate--> checked
#   --view--> the registry tables
#
# Usage:
#   scripts/batch_preprocess.sh [OUT_DIR [INPUT.h5ad|INPUT.zarr ...]]
#
#   OUT_DIR   where the store (OUT_DIR/atlas.zarr) is written (default: a new temp folder)
#   INPUT...  .h5ad files or AnnData Zarr stores with the same genes (default: two small
#             synthetic .h5ad files generated in OUT_DIR, so the script runs anywhere)
#
# Settings (environment variables):
#   ATLASLOADER        the command to run (default: atlasloader; e.g. "python -m atlasloader.cli")
#   PYTHON             python with atlasloader installed, to generate inputs (default: python3)
#   CLUSTER_ARGS       where dask runs, given to every heavy step, e.g. "--workers 4" or
#                      "--scheduler tcp://10.0.0.5:8786" (default: dask's threads; the
#                      ATLASLOADER_SCHEDULER environment variable works too)
#   JOIN               exact (default) or inner: genes of several inputs
#   BATCH_KEY, LABELS_KEY   obs columns for setup (default: batch, labels)
#   N_TOP_GENES        highly variable genes to select and train on (default: 20; 0: all genes)
#   CELLS, GENES       size of each generated input (default: 2000 cells, 200 genes)
#
# Every step runs with --quiet, so only errors are printed, and the script stops at the first
# failing step with that step's exit code: 1 validate found problems, 2 usage error, 3 bad input
# or data, 4 internal error, 130 interrupted.
set -euo pipefail

OUT_DIR=${1:-$(mktemp -d -t atlasloader-batch-XXXXXX)}
if (($# > 0)); then shift; fi
INPUTS=("$@")

read -r -a AL <<<"${ATLASLOADER:-atlasloader}"
read -r -a CLUSTER <<<"${CLUSTER_ARGS:-}"
PYTHON=${PYTHON:-python3}
JOIN=${JOIN:-exact}
BATCH_KEY=${BATCH_KEY:-batch}
LABELS_KEY=${LABELS_KEY:-labels}
N_TOP_GENES=${N_TOP_GENES:-20}
CELLS=${CELLS:-2000}
GENES=${GENES:-200}
STORE="$OUT_DIR/atlas.zarr"

log() { echo "batch_preprocess: $*" >&2; }

meaning() {
  case $1 in
    1) echo "problems found" ;;
    2) echo "usage error" ;;
    3) echo "bad input or data" ;;
    4) echo "internal error" ;;
    130) echo "interrupted" ;;
    *) echo "failed" ;;
  esac
}

# step NAME COMMAND...: run one step; on failure say which and exit with its code.
step() {
  local name=$1 rc=0
  shift
  local t0=$SECONDS
  "$@" || rc=$?
  if ((rc != 0)); then
    log "step '$name' failed with exit code $rc ($(meaning "$rc"))"
    exit "$rc"
  fi
  log "$name: ok ($((SECONDS - t0)) s)"
}

mkdir -p "$OUT_DIR"
if ((${#INPUTS[@]} == 0)); then
  log "no inputs given: generating two synthetic .h5ad files in $OUT_DIR"
  step generate "$PYTHON" -c "
import sys
from atlasloader.data import make_atlas_h5ad
out, cells, genes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(2):
    make_atlas_h5ad(f'{out}/input_{i}.h5ad', n_cells=cells, n_genes=genes, n_batches=4,
                    nnz_per_cell=max(1, genes // 10), seed=i)
" "$OUT_DIR" "$CELLS" "$GENES"
  INPUTS=("$OUT_DIR/input_0.h5ad" "$OUT_DIR/input_1.h5ad")
fi

# ${CLUSTER[@]+...}: an empty array is "unbound" to `set -u` in bash < 4.4.
step convert "${AL[@]}" convert "${INPUTS[@]}" "$STORE" --join "$JOIN" --overwrite --quiet \
  ${CLUSTER[@]+"${CLUSTER[@]}"}

SUBSET=()
if ((N_TOP_GENES > 0)); then
  step preprocess "${AL[@]}" preprocess "$STORE" --n-top-genes "$N_TOP_GENES" \
    --batch-key "$BATCH_KEY" --quiet ${CLUSTER[@]+"${CLUSTER[@]}"}
  SUBSET=(--var-subset highly_variable)
else
  step preprocess "${AL[@]}" preprocess "$STORE" --quiet ${CLUSTER[@]+"${CLUSTER[@]}"}
fi

step setup "${AL[@]}" setup "$STORE" --batch-key "$BATCH_KEY" --labels-key "$LABELS_KEY" \
  --size-factor-key size_factor ${SUBSET[@]+"${SUBSET[@]}"} --quiet \
  ${CLUSTER[@]+"${CLUSTER[@]}"}

# validate lists its problems on stderr with --quiet and exits 1 if there are any.
step validate "${AL[@]}" validate "$STORE" --quiet ${CLUSTER[@]+"${CLUSTER[@]}"}

step view "${AL[@]}" view "$STORE"

log "done: $STORE is converted, preprocessed, registered and valid"
echo "$STORE"
