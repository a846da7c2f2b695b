#!/usr/bin/env bash
# The wheels a bare GPU machine with Python 3.12 and torch lacks to run fitscope's GPU check
# (scripts/gpu-check.sh), into .whl/ (git-ignored), from a machine that reaches PyPI:
#   bash scripts/gpu-wheels.sh
# antlr4-python3-runtime 4.9.3 (omegaconf's parser) has no wheel on PyPI: it is built here.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 any; do
  platforms+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${platforms[@]}" -d .whl \
  "hydra-core==1.3.2" "omegaconf==2.3.0" "hydra-joblib-launcher==1.2.0" "plotly==6.5.0" \
  "tabulate==0.9.0"
python3 -m pip wheel -q --no-deps -w .whl "antlr4-python3-runtime==4.9.3"
ls .whl
