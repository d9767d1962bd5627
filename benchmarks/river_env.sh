#!/usr/bin/env bash
# A separate virtualenv for River, the online-learning reference of the backtest benchmark
# (benchmarks/river_arf.py). River 0.26 needs numpy 2, while the project's environment pins
# numpy < 2 (alibi-detect), so River can never be installed into .venv.
#
#     bash benchmarks/river_env.sh [VENV_DIR]     # default: $HOME/.cache/evergreen-river-venv
#
# Idempotent: an existing venv with river 0.26 is reused. The last line printed is the venv's
# python, for `python -m benchmarks.backtest --river-python PATH`.
set -euo pipefail

venv="${1:-$HOME/.cache/evergreen-river-venv}"
python="$venv/bin/python"

if ! "$python" -c 'import river, yaml, sys; sys.exit(not river.__version__.startswith("0.26."))' 2>/dev/null; then
    python3 -m venv "$venv"
    "$python" -m pip install --quiet "river==0.26.*" pyyaml >&2
fi
"$python" -c 'import river; print("river", river.__version__)' >&2
echo "$python"
