#!/usr/bin/env bash
# Cheap insurance against flax NNX API drift: the core layer tests under the
# tree-mode settings flax is moving to (see shared design notes).
set -euo pipefail
NNX_GRAPH_MODE=false NNX_GRAPH_UPDATES=false uv run pytest -q -n auto packages/core/tests/test_attention.py \
  packages/core/tests/test_lru.py -p no:cacheprovider
