#!/usr/bin/env bash
# Prepare Ray (ray[data] 2.60.0, Python 3.12) for the GPU machine of the device tool, which has
# pyarrow and pandas but not ray, and takes at most 64 MiB of files per call: the wheel is 79 MB,
# so it travels unpacked, xz-compressed and cut into parts r1, r2, ... of under 60 MB, staged in
# calls back to back on one warm machine (as tools/gpu/prepare.sh stages vLLM).
#
#   usage: tools/gpu/prepare_ray.sh OUTDIR            (OUTDIR git-ignored, e.g. .gpu-ray)
#   on the GPU machine, one call per part, in order:  bash OUTDIR/r1/stage.sh; bash OUTDIR/r2/stage.sh ...
#   then in the call that uses it:                    source OUTDIR/activate.sh   (adds $HOME/gpu-ray/site)
set -euo pipefail
out=${1:?usage: prepare_ray.sh OUTDIR}
P="--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any"
work=$(mktemp -d)
rm -rf "$out" && mkdir -p "$out" "$work/w" "$work/site"
out=$(cd "$out" && pwd)
pip download -q $P -d "$work/w" "ray[data]==2.60.0"
# Already on the GPU machine (its image: torch, transformers, pyarrow, pandas, numpy, requests ...).
( cd "$work/w" && rm -f numpy-* pandas-* pyarrow-* requests-* urllib3-* idna-* certifi-* charset_normalizer-* \
  packaging-* pyyaml-* PyYAML-* filelock-* fsspec-* python_dateutil-* pytz-* tzdata-* six-* typing_extensions-* )
python3 -m pip install -q --no-index --no-deps --no-compile $P --target "$work/site" "$work"/w/*.whl
# What a local batch job never loads: the dashboard's web client and the bundled Java/C++ headers.
( cd "$work/site" && rm -rf ray/dashboard/client/build ray/jars ray/cpp ray/core/src/ray/raylet/*.a ray/tests 2>/dev/null || true )
( cd "$work/site" && tar cf - . | xz -T2 -6 > "$work/ray.tar.xz" )
split -b 58m -d -a 1 "$work/ray.tar.xz" "$work/ray.part."
n=0
for f in "$work"/ray.part.*; do
  n=$((n + 1)); mkdir -p "$out/r$n"; mv "$f" "$out/r$n/part"
  cat > "$out/r$n/stage.sh" <<S
#!/usr/bin/env bash
# part $n of Ray: kept outside the checkout (the next call's files replace the tree)
set -e; here=\$(cd "\$(dirname "\$0")" && pwd); mkdir -p \$HOME/gpu-ray; cp "\$here/part" \$HOME/gpu-ray/part.$n; echo staged ray part $n
S
  chmod +x "$out/r$n/stage.sh"
done
cat > "$out/activate.sh" <<S
# source me on the GPU machine after staging parts r1..r$n: unpacks Ray once, exports PYTHONPATH.
if [ ! -d \$HOME/gpu-ray/site/ray ]; then
  for i in \$(seq 1 $n); do [ -f \$HOME/gpu-ray/part.\$i ] || { echo "ray part \$i is not staged" >&2; return 3; }; done
  mkdir -p \$HOME/gpu-ray/site && cat \$(for i in \$(seq 1 $n); do echo \$HOME/gpu-ray/part.\$i; done) | xz -dc | tar xf - -C \$HOME/gpu-ray/site
fi
export PYTHONPATH=\$HOME/gpu-ray/site\${PYTHONPATH:+:\$PYTHONPATH}
python3 -c "import ray; print('ray', ray.__version__)"
S
rm -rf "$work"
du -sh "$out"/*
