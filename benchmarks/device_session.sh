#!/usr/bin/env bash
# A lent GPU's checks as prepared commands (issue 6: benchmarks on the device;
# issue 5: the 16-setting ratio and the Adult main job there).
#
# Here, once, with registry access (the wheels land in .whl/, which git ignores):
#   bash benchmarks/device_session.sh fetch [PYTHON_VERSION]   # default 3.12
# On the device machine (the `device` tool's run, carry [".whl"], the command
# prefixed with SPLITJAX_GIT_COMMIT=<git rev-parse HEAD here>); each stage
# fits one 10-minute call, and its files come back from $OUT (8 at most):
#   bash benchmarks/device_session.sh smoke   # install, devices, the smoke sweep (seconds)
#   bash benchmarks/device_session.sh bench   # benchmarks.run + sweep_throughput
#   bash benchmarks/device_session.sh adult   # the README's main command
# Without $OUT (a dry run on a CPU) the files go to ./device_out/<time>/.
#
# The device image has jax, flax, optax, chex, absl-py, numpy, scipy, etils,
# protobuf, pyarrow and matplotlib, not dp-accounting, tensorflow-datasets or
# ml-collections: those and their missing dependencies travel as wheels, at
# the versions the CI installs. promise ships no wheel; one is built here.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(dp-accounting==0.6.0 tensorflow-datasets==4.9.10 ml-collections==1.1.0
        dm-tree==0.1.10 array-record==0.8.6 simple-parsing==0.1.9
        docstring-parser==0.18.0 tensorflow-metadata==1.21.0
        googleapis-common-protos==1.76.0 immutabledict==4.3.1 termcolor==3.3.0
        toml==0.10.2 importlib-resources==7.1.0)

fetch() {
  local version="${1:-3.12}"
  rm -rf .whl && mkdir -p .whl
  local platforms=()
  for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 \
           manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
  done
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$version" \
      --implementation cp "${platforms[@]}" -d .whl "${WHEELS[@]}"
  python3 -m pip wheel -q --no-deps -w .whl promise==2.3
  ls .whl
  du -sh .whl
}

install() {
  if python3 -c "import dp_accounting, tensorflow_datasets, ml_collections" 2>/dev/null; then
    return  # Already importable (a dry run in the dev venv).
  fi
  [ -d .whl ] || { echo "device_session: no .whl/ (run 'fetch' here, carry .whl)" >&2; exit 2; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
}

setup() {
  if [ -n "${OUT:-}" ] && [ -z "${SPLITJAX_GIT_COMMIT:-}" ]; then
    # The tree copied to the device may carry a stale .git.
    echo "device_session: set SPLITJAX_GIT_COMMIT=<the commit sent, from git rev-parse HEAD here>" >&2
    exit 2
  fi
  install
  OUT="${OUT:-$PWD/device_out/$(date +%Y%m%d-%H%M%S)}"
  mkdir -p "$OUT"
  export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
  python3 -c "import jax; print('devices:', jax.devices())" | tee "$OUT/stage.log"
  nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv 2>/dev/null \
      | tee -a "$OUT/stage.log" || true
}

bench() {
  setup
  { time python3 -m benchmarks.run --repeats=5 --out_dir="$OUT"; } 2>&1 | tee -a "$OUT/stage.log"
  { time python3 -m benchmarks.sweep_throughput --repeats=5 \
      --out="$OUT/sweep_$(python3 -c 'from benchmarks import workloads as w; print(w.device_name())').md"
  } 2>&1 | tee -a "$OUT/stage.log"
}

smoke() {
  setup
  rm -rf /tmp/splitjax_smoke
  python3 scripts/sweep.py --config=configs/synthetic.py:smoke --workdir=/tmp/splitjax_smoke \
      2>&1 | tail -20 | tee -a "$OUT/stage.log"
}

adult() {
  setup
  local wd=/tmp/splitjax_adult
  rm -rf "$wd"
  { time python3 scripts/sweep.py --config=configs/adult.py --workdir="$wd"; } 2>&1 \
      | tee -a "$OUT/stage.log"
  cp "$wd"/privacy_utility.{csv,json,md} "$OUT"/
}

case "${1:-}" in
  fetch) fetch "${2:-}" ;;
  smoke) smoke ;;
  bench) bench ;;
  adult) adult ;;
  *) echo "usage: bash benchmarks/device_session.sh fetch [PYTHON_VERSION] | smoke | bench | adult" >&2
     exit 2 ;;
esac
