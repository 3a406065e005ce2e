#!/usr/bin/env bash
# Installs what Osprey and its tests need on Debian 12, only what is missing, and restores NuGet packages.
# Idempotent: a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  python3 libpython3.11 python3-venv        # the interpreter; libpython3.11.so.1.0 for OSPREY_EMBED=1 (and its fallback), the tests and bench/Osprey.Bench
  python3-flask python3-django gunicorn      # applications the tests serve; gunicorn is the oracle
  curl
  gcc zlib1g-dev                             # scripts/publish.sh --aot links the Native AOT executable with them
  chromium                                   # the real-browser test drives headless Chromium over DevTools
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v dotnet >/dev/null || { echo "setup: the .NET 10 SDK (dotnet) is required" >&2; exit 1; }
dotnet restore Osprey.slnx --verbosity quiet
