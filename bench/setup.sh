#!/usr/bin/env bash
# Installs the peer servers and load generator the benchmark needs (idempotent).
# Runs `apt-get update` only when something is missing. Raises net.core.somaxconn
# to at least 4096 when running as root (uWSGI refuses --listen above somaxconn).
set -euo pipefail

PKGS=(gunicorn uwsgi-core uwsgi-plugin-python3 python3-waitress python3-flask python3-django wrk gcc libc6-dev liburing-dev python3-dev)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all packages present (${PKGS[*]})"
fi

# util-linux provides taskset; it is essential on Debian but check anyway.
command -v taskset >/dev/null 2>&1 || { echo "setup: taskset missing (util-linux)" >&2; exit 1; }

want=4096
cur=$(cat /proc/sys/net/core/somaxconn 2>/dev/null || echo 0)
if [ "$cur" -lt "$want" ]; then
  if $SUDO sysctl -q -w net.core.somaxconn=$want 2>/dev/null; then
    echo "setup: net.core.somaxconn raised $cur -> $want"
  else
    echo "setup: WARNING net.core.somaxconn=$cur (< $want) and could not be raised; run.py caps --listen/--backlog to it" >&2
  fi
else
  echo "setup: net.core.somaxconn=$cur"
fi

for b in gunicorn uwsgi wrk; do command -v "$b" >/dev/null || { echo "setup: $b not on PATH" >&2; exit 1; }; done
/usr/bin/python3 -c 'import waitress, flask, django' || { echo "setup: python modules missing for /usr/bin/python3" >&2; exit 1; }
echo "setup: ok"
