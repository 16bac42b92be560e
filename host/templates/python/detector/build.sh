#!/bin/sh
# Builds {{name}}.wasm from detector.py (and what it imports), with the
# componentize-py of requirements.txt on the PATH.
set -eu
cd "$(dirname "$0")"
componentize-py -d wit -w detector-plugin componentize -p . detector -o {{name}}.wasm
