#!/bin/sh
# Install ccm for the current user, from this checkout:
#   a private virtualenv in ~/.local/share/ccm/venv (override: CCM_PREFIX),
#   the commands ccm-hooks and ccm-agentd linked into ~/.local/bin (override: CCM_BIN).
# Re-running it upgrades in place. Needs Python >= 3.11 (override the interpreter: PYTHON=/path/to/python3).
# Optional parts: CCM_EXTRAS=fleet also installs what the fleet needs (psycopg, spec/fleet.md).
set -eu

src=$(cd "$(dirname "$0")/.." && pwd)
prefix=${CCM_PREFIX:-$HOME/.local/share/ccm}
bindir=${CCM_BIN:-$HOME/.local/bin}
python=${PYTHON:-python3}

if ! command -v "$python" >/dev/null 2>&1; then
    echo "install.sh: $python not found; install Python 3.11 or newer, or set PYTHON=/path/to/python3" >&2
    exit 1
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "install.sh: $("$python" -V 2>&1) is too old; ccm needs Python 3.11+ (set PYTHON=/path/to/python3.11)" >&2
    exit 1
fi

"$python" -m venv "$prefix/venv"
"$prefix/venv/bin/python" -m pip install --quiet --upgrade pip
extras=${CCM_EXTRAS:+[$CCM_EXTRAS]}
"$prefix/venv/bin/python" -m pip install --quiet --upgrade "$src$extras"

mkdir -p "$bindir"
for cmd in ccm-hooks ccm-agentd; do
    ln -sf "$prefix/venv/bin/$cmd" "$bindir/$cmd"
done

echo "ccm installed: $bindir/ccm-hooks, $bindir/ccm-agentd (virtualenv: $prefix/venv)"
case ":$PATH:" in
    *":$bindir:"*) ;;
    *) echo "note: $bindir is not on your PATH; add it, e.g. echo 'export PATH=\"$bindir:\$PATH\"' >> ~/.profile" ;;
esac
echo "next: cd your/project && ccm-hooks install && ccm-hooks status --watch"
