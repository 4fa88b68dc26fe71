#!/usr/bin/env bash
# Issue 12's cells on one GPU machine: Slim and the PareCO variants under measurement, on both
# resolve networks, for the seeds given -- every cell at once, one CPU thread each (a cell is
# bound by its own process: ~6 min for 5850 steps on an H200).
#
#   usage: bench/confirm_on_gpu.sh SEEDS [VARIANTS]     e.g. bench/confirm_on_gpu.sh 5,6
#
# VARIANTS (comma-separated, default slim,k64,k256): slim; k64, k256 (pareco.proposals: 64 /
# 256); hybrid64 (proposals 64 from half of training on, pareco.proposals_from: 0.5).
#
# Cells already in the cells folders are reused, so a second call trains only what is missing.
# Needs: the Fashion-MNIST IDX files in $PARECO_DATA (or data/fashion-mnist in the repository),
# $PYTHON (default python3) with torch+CUDA, botorch and this project importable. Each finished
# cell's JSON is copied to $OUT/<cells folder>/ when $OUT is set (the device runner's output
# folder); copy them into bench/results/ and commit them on the development machine.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:?usage: bench/confirm_on_gpu.sh SEEDS [VARIANTS] (comma-separated, e.g. 5,6 slim,k64)}
variants=${2:-slim,k64,k256}
py=${PYTHON:-python3}
export PARECO_DATA=${PARECO_DATA:-$PWD/data/fashion-mnist}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
cells=$(( ($(tr -cd , <<<"$seeds" | wc -c) + 1) * 2 ))  # per variant: seeds x 2 networks
runs=${RUNS_DIR:-/tmp/confirm-runs}
common=(--protocol resolve --device cuda --threads 1 --parallel "$cells" --seeds "$seeds"
        --networks resnet20_quarter,resnet20_half --set front.uniform_grid=24)

variant() {  # name cells-folder methods.py-arguments...
  local name=$1 dir=$2; shift 2
  local rc=0
  "$py" bench/methods.py "${common[@]}" "$@" --cells-dir "bench/results/$dir" \
    --runs-dir "$runs/$name" --out "$runs/$name.json" >"$runs/$name.log" 2>&1 || rc=$?
  if [[ -n "${OUT:-}" ]]; then
    mkdir -p "$OUT/$dir" && cp "$runs/$name.log" "$OUT/"
    if [[ -d "bench/results/$dir" ]]; then cp -r "bench/results/$dir/." "$OUT/$dir/"; fi
  fi
  echo "[confirm] $name: exit $rc"
  return $rc
}

for v in ${variants//,/ }; do
  [[ $v =~ ^(slim|k64|k256|hybrid64)$ ]] || {
    echo "unknown variant '$v': choose from slim, k64, k256, hybrid64" >&2; exit 2; }
done
mkdir -p "$runs"
nvidia-cuda-mps-control -d 2>/dev/null || true  # many small processes share the GPU better
for v in ${variants//,/ }; do
  case $v in
    slim) variant slim cells-resolve --methods slim & ;;
    k64) variant k64 cells-screen-proposals-k64 --methods pareco --set pareco.proposals=64 & ;;
    k256) variant k256 cells-screen-proposals-k256 --methods pareco --set pareco.proposals=256 & ;;
    hybrid64) variant hybrid64 cells-screen-hybrid-k64 --methods pareco --set pareco.proposals=64 \
                --set pareco.proposals_from=0.5 & ;;
  esac
done
status=0
for job in $(jobs -p); do wait "$job" || status=1; done
echo 'quit' | nvidia-cuda-mps-control 2>/dev/null || true
exit $status
