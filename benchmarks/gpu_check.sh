#!/usr/bin/env bash
# One prepared run on a lent GPU machine (see README "GPU figures"). Uses the machine's own
# python3 (which has torch); our packages come from the working tree via PYTHONPATH.
# Usage there: OUT=/some/folder bash benchmarks/gpu_check.sh [MNIST_DIR]
set -u
export PYTHONPATH="$PWD/packages/core/src:$PWD/packages/lab1_conv/src:$PWD/packages/checkpoint_project/src:${PYTHONPATH:-}"
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
MNIST=${1:-.devcache/mnist}
log() { echo "== $*" | tee -a "$OUT/log.txt"; }
log "machine"; (nvidia-smi -L; python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())") 2>&1 | tee -a "$OUT/log.txt"
log "CUDA tests"; timeout 120 python3 -m pytest -q -p no:cacheprovider packages/core/tests/test_cuda.py 2>&1 | tail -5 | tee -a "$OUT/log.txt"
log "gpu_amp resnet"; timeout 150 python3 benchmarks/gpu_amp.py --model resnet --images 25000 --compile 2>&1 | grep -v Warn | tee -a "$OUT/log.txt"
log "gpu_amp fast"; timeout 100 python3 benchmarks/gpu_amp.py --model fast --images 25000 2>&1 | grep -v Warn | tee -a "$OUT/log.txt"
log "loader_throughput cuda"; timeout 60 python3 benchmarks/loader_throughput.py --data-dir "$MNIST" --device cuda 2>&1 | grep -v Warn | tee -a "$OUT/log.txt"
log "done"
