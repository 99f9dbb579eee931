#!/bin/sh
# Everything the test suite needs, from nothing: tmux, jq and PostgreSQL (apt, when root), a virtualenv in
# .venv with ccm installed editable plus the test tools and the fleet extra, and every supported Claude Code
# CLI (tests/node_modules and tests/claude-<version>/node_modules).
set -eu
cd "$(dirname "$0")/.."

missing=""
for tool in tmux jq; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    else
        echo "dev-setup.sh: missing:$missing; install (apt install$missing / brew install$missing) and run again" >&2
        exit 1
    fi
fi
# Optional: systemd-analyze checks the unit `ccm-agentd install-service` writes (its test skips without it).
if ! command -v systemd-analyze >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null 2>&1 ||
        echo "dev-setup.sh: could not install systemd (optional); the unit's systemd-analyze test will skip" >&2
fi
# Optional: shells other systems use as /bin/sh, for the registered hook command's test (tests/test_shim.py
# runs it under each one installed; dash and bash are always there).
if ! command -v zsh >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends zsh mksh busybox >/dev/null 2>&1 ||
        echo "dev-setup.sh: could not install zsh, mksh, busybox (optional); their hook command tests will skip" >&2
fi
# PostgreSQL for the fleet's tests: they start a private cluster of their own (tests/pgcluster.py), so only
# the server's binaries are needed; the cluster apt may create and start is not used.
pg_bindir() {
    for d in "$(pg_config --bindir 2>/dev/null)" /usr/lib/postgresql/*/bin; do
        [ -n "$d" ] && [ -x "$d/initdb" ] && { echo "$d"; return 0; }
    done
    command -v initdb >/dev/null 2>&1 && dirname "$(command -v initdb)"
}
if [ -z "$(pg_bindir)" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    else
        echo "dev-setup.sh: PostgreSQL is missing; install it (apt install postgresql / brew install postgresql) and run again" >&2
        exit 1
    fi
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "dev-setup.sh: npm is missing; install Node.js 18+ and run again" >&2
    exit 1
fi

python=${PYTHON:-python3}
"$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test,fleet]'

# The Claude Code versions the end-to-end tests drive: the newest in tests/package.json, the oldest supported
# in tests/claude-<version>/package.json (spec/claude-versions.md).
for dir in tests tests/claude-*/; do
    npm install --prefix "$dir" --no-audit --no-fund --loglevel=error
    "${dir%/}/node_modules/.bin/claude" --version
done
tmux -V
"$(pg_bindir)/postgres" --version
