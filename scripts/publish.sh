#!/usr/bin/env bash
# Builds the osprey executable to deploy and prints its path.
#
#   scripts/publish.sh          artifacts/osprey/osprey: needs the .NET 10 runtime with the ASP.NET Core
#                               shared framework; the code is compiled ahead of time (ReadyToRun), so
#                               a process starts without JIT-compiling Osprey first
#   scripts/publish.sh --aot    artifacts/aot/osprey: Native AOT, one executable that needs no .NET
#                               runtime; about 30 MB less memory per process and a third of the start-up.
#                               Beside it, osprey.so: the same code as a shared library, which workers
#                               load from inside the Python interpreter (src/Osprey/Supervision/InterpreterHost.cs);
#                               without it they embed libpython in osprey processes
#
# Either way the whole directory is what you copy; the interpreter is found at run time (--python).
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  "")
    out=artifacts/osprey
    args=(--self-contained false -p:PublishReadyToRun=true)
    ;;
  --aot)
    out=artifacts/aot
    args=(-p:PublishAot=true)
    ;;
  *)
    echo "usage: scripts/publish.sh [--aot]" >&2
    exit 2
    ;;
esac

command -v dotnet >/dev/null || { echo "publish: the .NET 10 SDK (dotnet) is required" >&2; exit 1; }
log=$(mktemp)
if ! dotnet publish src/Osprey/Osprey.csproj -c Release -r linux-x64 "${args[@]}" -o "$out" --nologo >"$log" 2>&1; then
  grep -E "error|warning" "$log" | sort -u | head -20 >&2 || tail -20 "$log" >&2
  rm -f "$log"
  echo "publish: dotnet publish failed" >&2
  exit 1
fi
if [ "${1:-}" = "--aot" ]; then
  # Its own intermediate and output folders: the executable's would be taken for up to date.
  if ! dotnet publish src/Osprey/Osprey.csproj -c Release -r linux-x64 "${args[@]}" -p:NativeLib=Shared -p:OutputType=Library \
      -p:IntermediateOutputPath=obj/Release/native-lib/ -p:OutDir=bin/Release/native-lib/ -o "$out" --nologo >"$log" 2>&1; then
    grep -E "error|warning" "$log" | sort -u | head -20 >&2 || tail -20 "$log" >&2
    rm -f "$log"
    echo "publish: dotnet publish of the shared library (osprey.so) failed" >&2
    exit 1
  fi
fi
rm -f "$log"
echo "$out/osprey"
