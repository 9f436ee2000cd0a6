#!/usr/bin/env bash
# The main job, from a fresh clone: check the whole spec library, summarize, render and compile one spec.
# Usage: bash scripts/main.sh [SPEC]     (default specs/resnet.arch:resnet50), outputs in build/
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
SPEC=${1:-specs/resnet.arch:resnet50}
ARCHC=.venv/bin/archc
mkdir -p build
name=$(echo "${SPEC##*:}" | tr -c 'A-Za-z0-9_\n' '_')
echo "== archc check specs/"; $ARCHC check specs/
echo "== archc list specs/";  $ARCHC list specs/
echo "== archc summary $SPEC"; $ARCHC summary "$SPEC"
echo "== archc compile $SPEC -o build/$name.py"; $ARCHC compile "$SPEC" -o "build/$name.py"
echo "== archc render $SPEC -o build/$name.svg --depth 1"; $ARCHC render "$SPEC" -o "build/$name.svg" --depth 1
echo "== archc render $SPEC -o build/$name.html"; $ARCHC render "$SPEC" -o "build/$name.html"
echo "== build + forward in PyTorch"
.venv/bin/python - "$SPEC" <<'PY'
import sys, torch, archdsl
spec = sys.argv[1]
model = archdsl.build(spec).eval()
x = torch.randn(1, *model.input_shape)
with torch.no_grad():
    y = model(x)
shape = {k: tuple(v.shape) for k, v in y.items()} if isinstance(y, dict) else tuple(y.shape)
print(f"{spec}: input {tuple(x.shape)} -> output {shape}; {sum(p.numel() for p in model.parameters()):,} parameters")
PY
