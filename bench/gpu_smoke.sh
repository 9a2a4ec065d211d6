# The GPU smoke selection, sourced by bench/gpu_suite.sh (which runs it first on the device) and by
# bench/rehearse_device.sh (which checks on CPU that it collects): one D128 bf16 test per kernel family.
GPU_TESTS="tests/test_pallas_gpu.py tests/test_pallas_delta.py"
SMOKE="(hopper and (128-chunked or 128-fused)) or (simple_gla and bf16 and d128)"
