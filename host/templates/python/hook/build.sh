#!/bin/sh
# Builds {{name}}.wasm from hook.py (and what it imports), with the
# componentize-py of requirements.txt on the PATH.
set -eu
cd "$(dirname "$0")"
componentize-py -d wit -w hook-plugin componentize -p . hook -o {{name}}.wasm
