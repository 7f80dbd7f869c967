# Sourced by scripts/test and scripts/demo: make a fresh machine ready.
# - a virtualenv in .venv with the project and its dev extras installed
# - redis-server (installed with apt-get when absent and we may)
# Fails loudly when something cannot be provided.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "bootstrap: Python >= 3.11 is required (tried '$PYTHON'; set PYTHON=...)" >&2
    exit 1
fi

if [ ! -x .venv/bin/python ]; then
    echo "bootstrap: creating .venv" >&2
    "$PYTHON" -m venv .venv
fi
# constraints.txt pins the versions CI was green with, so a fresh machine resolves quickly
# and reproducibly (pip's backtracking over aiobotocore/botocore/moto can otherwise wander
# into ancient releases). A stamp skips pip when neither file changed.
stamp=.venv/.installed-$(cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
    echo "bootstrap: installing the project and its dev dependencies" >&2
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -c constraints.txt -e '.[dev]'
    rm -f .venv/.installed-*
    touch "$stamp"
fi

if ! command -v redis-server >/dev/null 2>&1; then
    echo "bootstrap: redis-server not found, installing it with apt-get" >&2
    SUDO=""
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
    if command -v apt-get >/dev/null 2>&1; then
        $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null \
            || echo "bootstrap: apt-get install redis-server failed" >&2
    fi
    if ! command -v redis-server >/dev/null 2>&1; then
        echo "bootstrap: redis-server is required and could not be installed" >&2
        exit 1
    fi
fi
export PATH="$ROOT/.venv/bin:$PATH"
