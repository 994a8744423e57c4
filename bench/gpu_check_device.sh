#!/usr/bin/env bash
# bench/gpu_check.py on a lent device machine whose image has python3 with torch but no package registry.
#
#   bash bench/gpu_check_device.sh fetch     # here, once (needs PyPI): the missing wheels into .devwheels/
#   bash bench/gpu_check_device.sh run       # there: install .devwheels/ into .devsite/, run, JSON into $OUT
#
# Device call (the folders are git-ignored; the wheels are about 59 MiB, inside the 64 MiB a call carries):
#   run(command="bash bench/gpu_check_device.sh run", carry=[".devwheels"], timeout_s=540)
# The device image (python3 = CPython 3.12 with torch, numpy, h5py, pandas, timm, ...) lacks decord, faiss,
# open_clip (+ ftfy, wcwidth) and an ffmpeg binary. imageio-ffmpeg 0.5.1 is carried for its ffmpeg (4.2.2,
# 27 MB; the 0.8 wheels hold a 68 MB ffmpeg 9, too big to carry). faiss-cpu stands in for faiss-gpu (whose
# CUDA 12 libraries do not fit): the FAISS step then reports the GPU build as failing with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
PINS=(decord==0.6.0 faiss-cpu==1.15.1 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 imageio-ffmpeg==0.5.1)

case "${1:-}" in
  fetch)
    PY=${PYTHON:-.venv/bin/python}
    [ -x "$PY" ] || PY=python3
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64 \
      -d .devwheels "${PINS[@]}"
    du -ch .devwheels/*.whl | tail -1
    ;;
  run)
    out=${OUT:-.}
    if ls .devwheels/*.whl >/dev/null 2>&1; then
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .devsite \
        .devwheels/*.whl
    fi
    export PYTHONPATH="$PWD/.devsite:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/nvidia_smi.csv" 2>&1 || true
    set +e
    python3 bench/gpu_check.py --out "$out/gpu_check.json" --budget-s "${BUDGET_S:-400}" 2>&1 | tee "$out/gpu_check.log"
    rc=${PIPESTATUS[0]}
    set -e
    exit "$rc"
    ;;
  *)
    sed -n '2,12p' "$0"
    exit 2
    ;;
esac
