#!/usr/bin/env bash
# Environment set-up for a university cluster (USC CARC style); every sbatch template sources it.
# Edit the module lines for your cluster; `module avail` lists what it has.

# Modules (placeholders: uncomment and match your cluster's names and versions).
# module purge
# module load gcc/13.3.0
# module load cuda/12.4.0
# module load conda

# The conda environment made from environment.yml: conda env create -f environment.yml
ENV_NAME="${SCALINGDOWN_ENV:-scalingDownEnv}"
if command -v conda >/dev/null 2>&1; then
    eval "$(conda shell.bash hook)"
    conda activate "$ENV_NAME"
else
    echo "carc_setup.sh: conda not found; load your cluster's conda module first" >&2
fi

# Model and data caches on scratch: home directories are small and slow; /scratch is shared by nodes.
SCRATCH_DIR="${SCRATCH:-/scratch1/$USER}"
export HF_HOME="${HF_HOME:-$SCRATCH_DIR/hf_home}"
export HF_DATASETS_CACHE="$HF_HOME/datasets"
mkdir -p "$HF_HOME"
# Compute nodes often have no internet: download models on a login node first, then run offline here.
# export HF_HUB_OFFLINE=1
export TOKENIZERS_PARALLELISM=false
