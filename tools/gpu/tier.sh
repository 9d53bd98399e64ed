#!/usr/bin/env bash
# The GPU test tier: the whole test suite, with real vLLM on CUDA, plus the `gpu`-marked tests.
# Runs ON the GPU machine (see tools/gpu/README.md for the calls that stage vLLM and the test
# packages first). Writes junit XML and a JSON summary for each part to $OUT.
#
#   bash tools/gpu/tier.sh all     # everything in one pytest run
#   bash tools/gpu/tier.sh suite   # every test except tests/test_gpu.py (CUDA is visible: engines use it)
#   bash tools/gpu/tier.sh gpu     # tests/test_gpu.py: bf16 parity at the 0.6B shape, hang, fork, replicas, TP/DP
#   bash tools/gpu/tier.sh pair-1  # on two GPUs, side by side: part suite-a (GPU 0) and suite-b (GPU 1)
#   bash tools/gpu/tier.sh pair-2  # part suite-c (GPU 0) and suite-d (GPU 1)
#
# `suite` as four parts, so that each pair fits a 10-minute call of the device tool (each pair took
# 276-307 s on 2 x H200 with vLLM 0.26 and 0.23; tools/gpu/RESULTS.md):
#   suite-a  tests/test_cli.py and the small files      suite-b  tests/test_remote_server.py, tests/test_remote_edges.py
#   suite-c  tests/test_vllm_engine.py                  suite-d  tests/test_readme.py and the integrations' tests
set -uo pipefail
part=${1:?usage: tier.sh all|suite|gpu|pair-1|pair-2|suite-a..suite-d [pytest args...]}; shift
here=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-$here/.gpu-tier-out}; mkdir -p "$out"
# On the device machine the test packages are staged into $HOME/tier-site (OUTDIR/t/stage.sh);
# on a CUDA machine of your own, install them as `make test` does (pip install -e '.[...]').
site=""; [ -d "$HOME/tier-site" ] && site=:$HOME/tier-site
export PYTHONPATH=$here/src:$here/integrations/langchain:$here/integrations/llama-index:$here:${PYTHONPATH:-}$site
python3 -c "import vllm, torch; assert torch.cuda.is_available()" 2>/dev/null \
  || { echo "needs vLLM (CUDA build) and a CUDA GPU: on the device machine, source OUTDIR/b/activate.sh first" >&2; exit 3; }
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 QWEN3_RERANK_CACHE=${QWEN3_RERANK_CACHE:-/tmp/qwen3-rerank-cache}
export QWEN3_RERANK_GPU_TIER=1   # tests/test_readme.py runs the README's GPU blocks on a local model
# LlamaIndex ships the tiktoken file its splitter needs, but only uses it when TIKTOKEN_CACHE_DIR is
# unset; the device machine's image sets it elsewhere, and nothing can be downloaded there.
tk=$(python3 -c "import os, llama_index.core as c; print(os.path.join(os.path.dirname(c.__file__), '_static', 'tiktoken_cache'))" 2>/dev/null)
[ -n "$tk" ] && [ -d "$tk" ] && export TIKTOKEN_CACHE_DIR=$tk
# The project's wheels are installed there with `pip install --target $HOME/tier-site`, which puts
# the real `qwen3-rerank` console script (it imports the checkout's code, first on PYTHONPATH) in
# $HOME/tier-site/bin.
[ -d "$HOME/tier-site/bin" ] && export PATH=$HOME/tier-site/bin:$PATH
cd "$here"
if [ "$part" = pair-1 ] || [ "$part" = pair-2 ]; then
  [ "$part" = pair-1 ] && { first=suite-a; second=suite-b; } || { first=suite-c; second=suite-d; }
  export TIER_PART_SECONDS=${TIER_PART_SECONDS:-540}
  CUDA_VISIBLE_DEVICES=1 QWEN3_RERANK_CACHE=$QWEN3_RERANK_CACHE-1 bash "$0" $second "$@" > "$out/log-$second.txt" 2>&1 &
  pid=$!
  CUDA_VISIBLE_DEVICES=0 bash "$0" $first "$@" > "$out/log-$first.txt" 2>&1
  rc_1=$?; wait $pid; rc_2=$?
  tail -n 3 "$out/log-$first.txt" "$out/log-$second.txt"
  exit $(( rc_1 > rc_2 ? rc_1 : rc_2 ))
fi
own=(--ignore=tests/test_gpu.py --ignore=tests/test_remote_server.py --ignore=tests/test_remote_edges.py
     --ignore=tests/test_vllm_engine.py --ignore=tests/test_readme.py)
case $part in
  suite) sel=(--ignore=tests/test_gpu.py) ;;
  suite-a) sel=(tests "${own[@]}") ;;
  suite-b) sel=(tests/test_remote_server.py tests/test_remote_edges.py) ;;
  suite-c) sel=(tests/test_vllm_engine.py) ;;
  suite-d) sel=(tests/test_readme.py integrations/langchain/tests integrations/llama-index/tests) ;;
  gpu) sel=(tests/test_gpu.py) ;;
  all) sel=() ;;
  *) echo "unknown part $part (all, suite, gpu, pair-1, pair-2, suite-a ... suite-d)" >&2; exit 2 ;;
esac
start=$(date +%s)
# TIER_PART_SECONDS: stop the part with SIGINT after that long (pytest still writes its junit XML
# and the summary records what ran), to stay inside a call's time limit; TIER_TEST_TIMEOUT: the
# per-test limit (pytest-timeout; the suite's own default is 900 s).
limit=(); [ "${TIER_PART_SECONDS:-0}" -gt 0 ] && limit=(timeout -s INT -k 20 "$TIER_PART_SECONDS")
"${limit[@]}" python3 -m pytest -p no:cacheprovider --junitxml="$out/junit-$part.xml" -v -ra --durations=40 \
  --timeout="${TIER_TEST_TIMEOUT:-900}" "${sel[@]}" "$@"
rc=$?
python3 tools/gpu/summary.py "$out/junit-$part.xml" --part "$part" --exit-code $rc --seconds $(( $(date +%s) - start )) > "$out/summary-$part.json"
cat "$out/summary-$part.json"
exit $rc
