#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine that has only the Rust toolchain, python3 and cargo-nextest
# (and, for the browser tests, Debian's chromium and chromium-driver, and for the alerting tests Debian's
# prometheus-alertmanager, which it installs when run as root).
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
    if ! python3 -m venv "$venv"; then
        # Debian splits ensurepip out of python3 into python3-venv.
        rm -rf "$venv"
        if command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]]; then
            echo "test.sh: python3 -m venv failed; installing Debian's python3-venv" >&2
            apt-get update -qq
            apt-get install -y -qq python3-venv
            python3 -m venv "$venv"
        else
            echo "test.sh: python3 -m venv failed: install python3-venv (Debian) and rerun" >&2
            exit 1
        fi
    fi
fi

wanted="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$wanted" ]]; then
    echo "test.sh: installing pinned OpenTelemetry Python packages" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$requirements"
    echo "$wanted" >"$stamp"
fi

export MESHSCOPE_TEST_PYTHON="$venv/bin/python"

# The web UI tests (tests/web_ui.rs) drive Debian's headless Chromium through chromedriver.
if [[ ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ]]; then
    if command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]]; then
        echo "test.sh: installing Debian's chromium and chromium-driver" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
    else
        echo "test.sh: install Debian's chromium and chromium-driver (as root: apt-get install chromium chromium-driver) and rerun" >&2
        exit 1
    fi
fi

# The alerting tests (tests/alerting.rs) start Debian's Prometheus Alertmanager as a real receiver.
if [[ ! -x /usr/bin/prometheus-alertmanager ]]; then
    if command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]]; then
        echo "test.sh: installing Debian's prometheus-alertmanager" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-alertmanager
    else
        echo "test.sh: install Debian's prometheus-alertmanager (as root: apt-get install prometheus-alertmanager) and rerun" >&2
        exit 1
    fi
fi

# --no-fail-fast is refused together with --no-run (a build-only invocation).
nextest_args=(--workspace --no-fail-fast)
for arg in "$@"; do
    if [[ "$arg" == "--no-run" ]]; then
        nextest_args=(--workspace)
    fi
done

exec cargo nextest run "${nextest_args[@]}" "$@"
