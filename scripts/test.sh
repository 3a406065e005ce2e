#!/usr/bin/env bash
# Sets up what is missing, builds, and runs every test twice: against the build that `dotnet test`
# makes (JIT), then against the Native AOT executable (scripts/publish.sh --aot), because that is
# the binary to deploy and trimming or AOT can break what the JIT build does. OSPREY_TEST_AOT=0
# skips the second pass. Ends with "N passed, N failed" (both passes) on its own line.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
results=tests/artifacts
rm -rf "$results"
failures=0

dotnet test Osprey.slnx --nologo --logger "trx;LogFileName=results.trx" --logger "console;verbosity=normal" \
  --results-directory "$results" "$@" || failures=$((failures + 1))

if [ "${OSPREY_TEST_AOT:-1}" != "0" ]; then
  echo "=== the same tests against the Native AOT executable"
  if aot=$(bash scripts/publish.sh --aot); then
    OSPREY_TEST_EXECUTABLE="$PWD/$aot" dotnet test Osprey.slnx --nologo --no-build \
      --logger "trx;LogFileName=results-aot.trx" --logger "console;verbosity=normal" \
      --results-directory "$results" "$@" || failures=$((failures + 1))
  else
    echo "the Native AOT publish failed: its pass counts as one failure" >&2
    failures=$((failures + 1))
  fi
fi

passed=0; failed=0
for trx in "$results"/*.trx; do
  [ -f "$trx" ] || continue
  counters=$(grep -o '<Counters [^>]*>' "$trx" | head -1)
  p=$(echo "$counters" | grep -o ' passed="[0-9]*"' | grep -o '[0-9]*')
  f=$(echo "$counters" | grep -o ' failed="[0-9]*"' | grep -o '[0-9]*')
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
done
if [ "$passed" -eq 0 ] && [ "$failed" -eq 0 ]; then
  echo "no test results found" >&2
  failed=1
fi
# A pass that failed without a failed test (a build error, a crashed test host) still fails the run.
if [ "$failures" -gt 0 ] && [ "$failed" -eq 0 ]; then
  failed=$failures
fi
# CI keeps only the end of the output: name each failed test there, with the start of its message.
if [ "$failed" -gt 0 ]; then
  /usr/bin/python3 - "$results" <<'PY' || true
import glob, sys, xml.etree.ElementTree as ET
ns = {"t": "http://microsoft.com/schemas/VisualStudio/TeamTest/2010"}
for trx in sorted(glob.glob(sys.argv[1] + "/*.trx")):
    for result in ET.parse(trx).getroot().iterfind(".//t:UnitTestResult", ns):
        if result.get("outcome") != "Failed":
            continue
        message = result.findtext(".//t:ErrorInfo/t:Message", "", ns).strip()
        stack = result.findtext(".//t:ErrorInfo/t:StackTrace", "", ns).strip()
        frame = next((line.strip() for line in stack.splitlines() if "Osprey.Tests" in line), "")
        print(f"FAILED [{trx.rsplit('/', 1)[-1]}] {result.get('testName')}")
        print("  " + message[:1500].replace("\n", "\n  "))
        if frame:
            print("  " + frame[:300])
PY
fi
echo "$passed passed, $failed failed"
[ "$failures" -eq 0 ] && [ "$failed" -eq 0 ]
