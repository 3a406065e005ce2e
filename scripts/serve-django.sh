#!/usr/bin/env bash
# Sets up what is missing, builds Osprey, prepares examples/django_site (sqlite migrated, superuser, static files;
# idempotent) and serves it on http://127.0.0.1:8000/admin/ (user admin, password $DJANGO_SUPERUSER_PASSWORD or
# osprey-admin). Extra arguments go to osprey.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
osprey=$(bash scripts/publish.sh)
/usr/bin/python3 examples/django_site/prepare.py
echo "Serving examples/django_site on http://127.0.0.1:8000/admin/ (user ${DJANGO_SUPERUSER_USERNAME:-admin}; Ctrl-C to stop)"
exec "$osprey" -b 127.0.0.1:8000 --threads 4 \
  --python /usr/bin/python3 --chdir examples/django_site "$@" site_project.wsgi:application
