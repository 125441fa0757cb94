#!/usr/bin/env bash
# Run the capture tests against one transformers version in a fresh virtual environment
# (default: the oldest one lrc_kernels supports). Not part of .ci/run, which tests the
# newest version the [test] extra resolves to.
#
#   bash .ci/capture-oldest.sh                      # transformers 4.45.* (the oldest)
#   TRANSFORMERS=4.57.6 bash .ci/capture-oldest.sh  # any other version
#   VENV=/tmp/venv-tf bash .ci/capture-oldest.sh    # venv location (default under $TMPDIR; reused)
#
# torch is pinned to the CPU build (a bare "torch" pulls a multi-GB CUDA build). The tests
# import lrc_kernels from this checkout (PYTHONPATH); families the version lacks skip with
# the reason, so read the skip summary as well as the pass count.
set -euo pipefail
cd "$(dirname "$0")/.."
TRANSFORMERS="${TRANSFORMERS:-4.45.*}"
VENV="${VENV:-${TMPDIR:-/tmp}/lrc-capture-tf-${TRANSFORMERS//\*/x}}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  "torch==2.13.0" "transformers==${TRANSFORMERS}" \
  "numpy>=1.24" "numba>=0.59" "pyarrow>=14" "threadpoolctl>=3" \
  "pytest>=8" "hypothesis>=6.100" "psutil>=5.9" "safetensors>=0.4" "tqdm>=4.60"
"$VENV/bin/python" -c "import transformers, torch; print('transformers', transformers.__version__, 'torch', torch.__version__)"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -rs tests/test_capture.py tests/test_capture_generate.py
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/test_docs.py -k capture
