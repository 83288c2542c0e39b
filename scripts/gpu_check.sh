#!/usr/bin/env bash
# One-shot CUDA check for a lent GPU machine: the tests marked `gpu` and the GPU benchmarks.
# Nothing can be installed there, so it uses that machine's python3 (which holds torch, transformers
# and peft) with this checkout on PYTHONPATH, and runs only the tensor-side tests.
# Logs and JSON results go to $OUT (on the device tool) or ./gpu-check-out.
#   run:  scripts/gpu_check.sh            (on this project's device tool: command "bash scripts/gpu_check.sh")
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-check-out}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device here'; \
print(torch.cuda.get_device_name(0), 'torch', torch.__version__)" || exit 2
status=0
python3 -m pytest -q -m gpu tests/adapter_hub/test_gpu.py -p no:cacheprovider 2>&1 | tee "$out/gpu_tests.log" || status=1
python3 benchmarks/bench_eval.py --device cuda --json "$out/eval_cuda.json" 2>&1 | tee "$out/bench_eval.log" || status=1
python3 benchmarks/bench_eval.py --device cuda --batch-size 8 --json "$out/eval_cuda_bs8.json" 2>&1 \
    | tee "$out/bench_eval_bs8.log" || status=1
python3 benchmarks/bench_lora.py --device cuda --batch 8 --seq 128 --json "$out/lora_cuda.json" 2>&1 \
    | tee "$out/bench_lora.log" || status=1
echo "gpu_check exit status: $status"
exit $status
