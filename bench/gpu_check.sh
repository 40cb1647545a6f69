#!/usr/bin/env bash
# The GPU checks as one prepared script, for a machine with a real NVIDIA GPU and no package
# index (the device machine): installs River's dependencies from wheels carried in .whl/,
# then runs bench/gpu_check.py and the `gpu` tests. Figures land in $OUT (or ./gpu-out).
#
#   make the wheels once where an index is reachable (CPython 3.12, manylinux):
#     python3 -m pip download --only-binary=:all: --python-version 3.12 --platform \
#       manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl "jupyter_server<3" \
#       "jupyter-server-proxy>=4.2" paramiko sqlalchemy bcrypt tornado pyroute2 docker httpx \
#       psutil nbformat pytest pytest-timeout "pydantic>=2.6"
#   then, on the GPU machine, from the repository root:  bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
SITE=$(mktemp -d)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl || exit 1
# The `river` command finds its subcommands through entry points: give the source tree a
# distribution record (what `pip install -e .` would write) without building the lab bundle.
DIST="$SITE/jupyter_river-0.0.dist-info"
mkdir -p "$DIST"
printf 'Metadata-Version: 2.1\nName: jupyter-river\nVersion: 0.0\n' >"$DIST/METADATA"
python3 - "$DIST/entry_points.txt" <<'PY'
import sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
lines = ["[console_scripts]"] + [f"{k} = {v}" for k, v in project["scripts"].items()]
for group, points in project["entry-points"].items():
    lines += ["", f"[{group}]"] + [f"{k} = {v}" for k, v in points.items()]
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
PY
export PYTHONPATH="$SITE:$PWD" PATH="$SITE/bin:$PATH" PYTHONUNBUFFERED=1
nvidia-smi -L | tee "$OUT/nvidia-smi.txt"
timeout 200 python3 bench/gpu_check.py -n 500 --load-seconds 10 --json "$OUT/gpu_check.json" 2>&1 | tee "$OUT/gpu_check.log"
timeout 240 python3 -m pytest -p no:cacheprovider -m gpu tests/gpu -v -rA 2>&1 | tee "$OUT/pytest.log"
