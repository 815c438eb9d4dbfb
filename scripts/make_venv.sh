#!/usr/bin/env bash
# Create the project venv ($2) from the interpreter $1 and print what torch needs: "keep" when the new venv already
# imports a torch (a GPU box's, through --system-site-packages), "install" otherwise. The check runs in the *new*
# venv: an interpreter that is itself a venv passes its base's site-packages on, not its own, so its torch is not
# visible there, and installing the requirements first would let pip pull the default (multi-GB CUDA) torch wheel
# as a dependency. Used by the Makefile; tested in tests/test_make_venv.py.
set -euo pipefail
python="$1"
venv="$2"
if "$python" -c "import torch" 2>/dev/null; then
  "$python" -m venv --system-site-packages "$venv"
else
  "$python" -m venv "$venv"
fi
if "$venv/bin/python" -c "import torch" 2>/dev/null; then
  echo keep
else
  echo install
fi
