#!/usr/bin/env bash
# Sets up what is missing, builds Osprey and serves examples/flask_app on http://127.0.0.1:8000
# (sign in as demo / demo; uploads go to examples/flask_app/uploads). Extra arguments go to osprey.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
osprey=$(bash scripts/publish.sh)
echo "Serving examples/flask_app on http://127.0.0.1:8000 (sign in as demo / demo; Ctrl-C to stop)"
exec "$osprey" -b 127.0.0.1:8000 --threads 4 \
  --python /usr/bin/python3 --chdir examples/flask_app "$@" app:app
