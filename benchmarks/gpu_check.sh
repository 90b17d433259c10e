#!/usr/bin/env bash
# Run on a GPU machine whose Python has torch and transformers (nothing else of reasonloop's):
#   bash benchmarks/gpu_check.sh            # CUDA
#   bash benchmarks/gpu_check.sh --device cpu
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
exec python3 benchmarks/gpu_check.py "$@"
