#!/usr/bin/env bash
# The GPU node's air-gapped install, rehearsed on a CPU machine (.ci/run runs it): an environment
# holding only the stock PyTorch image's packages (tools/stock-image.txt), the wheelhouse
# (tools/wheelhouse.py) installed into it with no index, torch checked untouched, then the GPU suite
# from the checkout with --device cpu --quick: every section must report, and a section that fails
# on purpose must make the suite exit non-zero while the others keep their results.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${SFA_REHEARSAL_DIR:-/tmp/sfa-rehearsal}
rm -rf "$work" && mkdir -p "$work"
py=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
node="$work/node/bin/python"

python3 -m venv "$work/node"
"$node" -m pip install -q -r tools/stock-image.txt                       # what the image has
python3 tools/wheelhouse.py "$work/wheelhouse" --python "$py" >"$work/wheelhouse.log" 2>&1 \
  || { tail -n 20 "$work/wheelhouse.log"; exit 1; }
torch_before=$("$node" -m pip show torch | grep '^Version')
"$node" -m pip install -q --no-index --find-links "$work/wheelhouse" sfa-cache pytest-timeout
torch_after=$("$node" -m pip show torch | grep '^Version')
[ "$torch_before" = "$torch_after" ] || { echo "rehearsal: the install changed torch ($torch_before -> $torch_after)"; exit 1; }

"$node" -m benchmarks.gpu_suite --device cpu --quick --section-timeout 600 --deadline 1800 --report "$work/suite.md" \
  --workdir "$work/suite" >"$work/suite.log" 2>&1 \
  || { tail -n 40 "$work/suite.log"; echo "rehearsal: the suite failed on the CPU"; exit 1; }
for section in "CUDA-marked tests" "Frames that fit" "Step cost" "Extraction against" "Stage-2 input"; do
  grep -q "^## $section" "$work/suite.md" || { echo "rehearsal: no '$section' section in the report"; exit 1; }
done
if "$node" -m benchmarks.gpu_suite --device cpu --quick --section-timeout 600 --deadline 1800 --sections step fail --report "$work/fail.md" \
     --workdir "$work/suite" >"$work/fail.log" 2>&1; then
  echo "rehearsal: a failing section did not fail the suite"; exit 1
fi
grep -q "^## Step cost.*: ok" "$work/fail.md" && grep -q "^## A section that fails on purpose.*: FAILED" "$work/fail.md" \
  && grep -q "measured before the failure" "$work/fail.md" \
  || { cat "$work/fail.md"; echo "rehearsal: the failing section's report is not as it should be"; exit 1; }
echo "rehearsal: stock image + wheelhouse (no index) installed, torch untouched ($torch_after), every GPU-suite" \
     "section reported on the CPU, a failing section failed the suite and kept the others"
