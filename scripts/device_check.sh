#!/usr/bin/env bash
# The device check: on a machine with one CUDA GPU, in one command that ends within 10 minutes,
#   1. kdbench bench on the paper profile's first pair (resnet56 -> resnet20) at the paper's batch, each
#      (precision, memory format) the GPU runs: fp32 and bf16, contiguous and channels-last;
#   2. one shortened paper cell end to end (kd, 2 epochs of 10,000 images, the cifar recipe);
#   3. the test suite's GPU-marked tests.
# Everything is on synthetic CIFAR-100 (the paper's shapes, images from a seed), so it needs no files and no
# network, and nothing but the packages PyTorch images carry (torch, torchvision, timm, pandas, pyyaml, safetensors,
# tqdm, pytest): kdbench runs from this checkout. Writes results/device-check/ (and copies it to $OUT where set).
#     bash scripts/device_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=results/device-check
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export KDBENCH_CACHE="${KDBENCH_CACHE:-$(mktemp -d)}"
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'device check: no CUDA device here')"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >"$out/gpu.txt" 2>&1 || true

# the paper profile's first pair and batch, at a budget that fits: teachers one epoch on 10,000 images
cat >"$out/paper-toy.yaml" <<'YAML'
name: paper-toy
dataset: synthetic:cifar100
pairs: [{teacher: cifar_resnet56, student: cifar_resnet20}]
seeds: [0]
recipe: cifar
epochs: 2
teacher_epochs: 1
train_subset: 10000
methods: [baseline, kd, fitnet, at, crd, dkd, reviewkd]
YAML

status=0
timeout 300 python3 -m kdbench bench --grid "$out/paper-toy.yaml" --device cuda --results-dir "$out" --quiet \
    2>&1 | tee "$out/bench.log" || status=1
timeout 150 python3 -m kdbench run --method kd --dataset synthetic:cifar100 --teacher cifar_resnet56 \
    --student cifar_resnet20 --recipe cifar --epochs 2 --teacher-epochs 1 --train-subset 10000 --device cuda \
    --results-dir "$out/run" --quiet 2>&1 | tee "$out/run.log" || status=1
cp "$out"/run/records/*.json "$out/run-record.json" 2>/dev/null || status=1
timeout 100 python3 -m pytest -q -m gpu tests 2>&1 | tee "$out/pytest-gpu.log" || status=1
if [ -n "${OUT:-}" ]; then
    cp "$out"/perf.md "$out"/gpu.txt "$out"/*.log "$out"/run-record.json "$OUT"/ 2>/dev/null || true
fi
exit "$status"
