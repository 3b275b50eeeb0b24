#!/usr/bin/env bash
# The GPU checks (DEVELOPERS.md, "On a GPU machine"): the gpu-marked tests,
# the videotracker on CUDA against CPU, its frames per second against the
# raw loop, all on the machine's real NVML. Run from the repository root on
# a machine with an NVIDIA GPU and the wheels in .whl/ (DEVELOPERS.md says
# which); what it prints also lands in $OUT (or ./gpu-check/).
set -uo pipefail
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,pci.bus_id --format=csv | tee "$OUT/gpu.txt"
# NVML names processes by the machine's ids: the budget needs the host's PID namespace.
echo "PID namespace $(stat -L -c %i /proc/self/ns/pid) (4026531836: the machine's own);" \
    "kernel log readable: $(head -c0 /dev/kmsg 2>&1 && echo yes)" | tee -a "$OUT/gpu.txt"
python3 -m pytest -m gpu -p no:randomly -p no:cacheprovider -rs -s \
    tests/test_gpu.py tests/test_gpu_watch.py contrib_plugins/videotracker/tests 2>&1 | tee "$OUT/gpu-tests.log"
python3 -m benchmarks.bench_videotracker track detect 2>&1 | tee "$OUT/bench-videotracker.log"
