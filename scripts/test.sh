#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine that has only the Rust toolchain, python3 and cargo-nextest.
#
#   scripts/test.sh [extra cargo-nextest args...]
#
# Sets up the Python virtualenv with the official OpenTelemetry SDK that the end-to-end tests drive
# (tests/python/requirements.txt, pinned), then runs every test of the workspace. Idempotent: the venv is
# only (re)installed when requirements.txt changed since the last install.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo_root="$PWD"

venv="$repo_root/.venv"
requirements="$repo_root/tests/python/requirements.txt"
stamp="$venv/.meshscope-requirements.sha256"

if [[ ! -x "$venv/bin/python" ]]; then
    echo "test.sh: creating Python virtualenv in $venv" >&2
    python3 -m venv "$venv"
fi

wanted="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$wanted" ]]; then
    echo "test.sh: installing pinned OpenTelemetry Python packages" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$requirements"
    echo "$wanted" >"$stamp"
fi

export MESHSCOPE_TEST_PYTHON="$venv/bin/python"

exec cargo nextest run --workspace --no-fail-fast "$@"
