#!/usr/bin/env bash
# Run README.md's two commands in a fresh clone and a fresh virtual environment, as a new user would.
# Usage: scripts/check_fresh_clone.sh [WORKDIR]   (default: a new temporary directory)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$(mktemp -d)}"
git clone --quiet "$repo" "$work/kdrun"
cd "$work/kdrun"
echo "== install and run the default job (in $work/kdrun)"
python3 -m venv .venv && . .venv/bin/activate && pip install -q -e ".[dev]" && kdrun
echo "== test suite"
python -m pytest
