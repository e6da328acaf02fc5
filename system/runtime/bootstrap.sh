#!/usr/bin/env bash
# Bootstrap, first half: uv (pinned, kept in the per-user cache) and the project's .venv,
# installed exactly from uv.lock. Then `harness bootstrap` installs the rest (Kafka jars,
# Jaeger and Toxiproxy builds, Debian packages). Idempotent: a second run is a no-op.
set -euo pipefail
cd "$(dirname "$0")/../.."

UV_VERSION=0.13.9
cache="${MICROHARNESS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/microharness}"
uv_home="$cache/uv-$UV_VERSION"
python="${PYTHON:-python3.11}"

if ! command -v "$python" >/dev/null 2>&1; then
  echo "bootstrap: $python is missing: install Python 3.11 (or set PYTHON=/path/to/python3.11); nothing else can be installed without it" >&2
  exit 2
fi
if [ ! -x "$uv_home/bin/uv" ]; then
  echo "==> uv $UV_VERSION into $uv_home"
  rm -rf "$uv_home.partial"
  "$python" -m venv "$uv_home.partial"
  "$uv_home.partial/bin/pip" install --quiet "uv==$UV_VERSION"
  mv "$uv_home.partial" "$uv_home"
fi
export UV_PYTHON_DOWNLOADS=never UV_CACHE_DIR="$cache/uv-cache"
"$uv_home/bin/uv" sync --frozen --quiet --python "$python"
exec .venv/bin/harness bootstrap "$@"
