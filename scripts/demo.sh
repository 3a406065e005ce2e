#!/usr/bin/env bash
# Sets up what is missing, builds Osprey and serves the bundled demo on http://127.0.0.1:8000
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
osprey=$(bash scripts/publish.sh)
echo "Serving examples/demo on http://127.0.0.1:8000 (Ctrl-C to stop)"
exec "$osprey" -b 127.0.0.1:8000 --threads 4 \
  --python /usr/bin/python3 --chdir examples/demo "$@" app:app
