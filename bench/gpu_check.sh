#!/usr/bin/env bash
# GPU check of the export: parity with the CUDA provider and fp16, then the export benchmark on CUDA.
#
#   bench/gpu_check.sh            # on a Linux machine with an NVIDIA GPU, CUDA 12 and cuDNN 9 libraries
#
# Steps (each under its own time limit, under 8 minutes in all once .venv exists):
#   1. swap onnxruntime for onnxruntime-gpu in .venv (both ship the module `onnxruntime`) and check that a
#      session starts on the CUDA execution provider;
#   2. the export tests, GPU ones included: parity of every stack shape (checked on CPU at 1e-4), and fp16
#      fused and swappable exports checked on the CUDA provider (label agreement, task metric);
#   3. bench/export.py --device cuda --precision fp16 on the embedded base and the XLM-R-base-shaped model.
# Results: bench/results/export-cuda.{json,png}, bench/results/gpu_check.log. Exit status: the first failure.
# It restores the CPU onnxruntime at the end unless KEEP_GPU_ORT=1.
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${RESULTS:-bench/results}
mkdir -p "$RESULTS"
LOG="$RESULTS/gpu_check.log"
exec > >(tee "$LOG") 2>&1
PY=.venv/bin/python
ORT_SPEC=$(grep -o '"onnxruntime-gpu[^"]*"' pyproject.toml | tr -d '"')
CPU_SPEC=$(grep -o '"onnxruntime[>=<][^"]*"' pyproject.toml | tr -d '"')
started=$(date +%s)
step() { echo; echo "== $(( $(date +%s) - started ))s: $*"; }

if [ ! -x "$PY" ]; then
    step "no .venv: make setup (not counted in the 8-minute budget; needs PyPI)"
    make setup
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv

restore() {
    if [ "${KEEP_GPU_ORT:-0}" != "1" ]; then
        echo "restoring $CPU_SPEC"
        "$PY" -m pip uninstall -y -q onnxruntime-gpu || true
        "$PY" -m pip install -q "$CPU_SPEC" || true
    fi
}
trap restore EXIT

step "1/3 onnxruntime-gpu ($ORT_SPEC)"
timeout 240 "$PY" -m pip uninstall -y -q onnxruntime onnxruntime-gpu || true
timeout 240 "$PY" -m pip install -q "$ORT_SPEC"
"$PY" - <<'EOF'
import onnxruntime as ort

providers = ort.get_available_providers()
print("onnxruntime", ort.__version__, providers)
assert "CUDAExecutionProvider" in providers, "onnxruntime-gpu is installed but has no CUDA provider"
from langadapt.export.runtime import _session  # noqa: E402  (a real session proves the CUDA libraries load)
import onnx, tempfile, pathlib
from onnx import TensorProto, helper
g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
path = pathlib.Path(tempfile.mkdtemp()) / "relu.onnx"
onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
print("session providers:", _session(path, "cuda", None).get_providers())
EOF

step "2/3 export tests on CPU and CUDA (parity; fp16 checked on the CUDA provider)"
timeout 180 "$PY" -m pytest -q -p no:cacheprovider tests/unit/test_export_fused.py tests/unit/test_export_swappable.py \
    tests/unit/test_export_runtime.py -rs

step "3/3 benchmark on CUDA, fp16 (embedded + XLM-R-base-shaped)"
timeout 300 "$PY" bench/export.py --device cuda --precision fp16 --repeats 10 --xlmr-repeats 5 --max-seconds 10 \
    --no-metric --out "$RESULTS"

step "done: $RESULTS/export-cuda.json, $RESULTS/export-cuda.png, $LOG"
