#!/usr/bin/env bash
# A lent GPU's work for issue 6, one stage per device call (a call runs at most 10 minutes; a
# session has 30 minutes of device time), each writing its logs and reports under $OUT and
# printing a short summary last:
#
#   bash bench/gpu_lease.sh check    # the device, then the Pallas kernels compiled there against
#                                    # the scan (`make gpu-check`: tests/test_pallas.py -m gpu)
#   bash bench/gpu_lease.sh small    # bench/gpu.py, H in {64, 128}, T = 100
#   bash bench/gpu_lease.sh long     # bench/gpu.py, H in {64, 128}, T = 1000
#   bash bench/gpu_lease.sh large    # bench/gpu.py, H >= 256: T = 500, H = 768 bf16, inference
#
# Run `check` first: a kernel that fails there is not worth timing. Afterwards, on the CPU machine:
# join the reports' sections under one header in bench/results/gpu.md, and add the compute
# capability to jrnn.kernels._fused._PALLAS_MEASURED_FASTER only if the Pallas rows beat the XLA
# fused rows at the sizes it can run.
#
# The device image's python3 has JAX (CUDA), Flax, PyTorch and pytest; nothing is installed here.
set -u
stage=${1:?usage: bash bench/gpu_lease.sh check|small|long|large}
out=${OUT:-/tmp/jrnn_gpu}
mkdir -p "$out"
export PYTHONPATH=. PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false

bench() {  # bench REGEX NAME: the matching sections of bench/gpu.py, stopped before the call's limit
	timeout 540 python3 bench/gpu.py --only "$1" --out "$out/$2.md" >/dev/null 2>"$out/$2.log"
	echo "bench/gpu.py exit $? (124: stopped at the time limit; the report keeps what was measured)"
	tail -5 "$out/$2.log"
	grep -E '^(## |\| jrnn|\| jax|\| pytorch)' "$out/$2.md" | cut -c1-110
}

case "$stage" in
check)
	nvidia-smi --query-gpu=name,driver_version,compute_cap,clocks.sm,clocks.mem --format=csv | tee "$out/device.txt"
	python3 -c 'import jax, torch; print("jax", jax.__version__, jax.devices(), "torch", torch.__version__)' |
		tee -a "$out/device.txt"
	timeout 540 python3 -m pytest -q -m gpu tests/test_pallas.py >"$out/gpu_check.log" 2>&1
	echo "pytest exit $?"
	grep -E '^(FAILED|ERROR)' "$out/gpu_check.log" | head -25
	tail -1 "$out/gpu_check.log"  # pytest's count: all skipped would mean the GPU was not taken for Hopper
	;;
small) bench 'T=100 .*H=(64|128) ' gpu_small ;;
long) bench 'T=1000 .*H=(64|128) ' gpu_long ;;
large) bench 'H=(256|512|768|1024) ' gpu_large ;;
*)
	echo "unknown stage '$stage': check, small, long or large" >&2
	exit 2
	;;
esac
