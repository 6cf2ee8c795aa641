#!/usr/bin/env bash
# Clean-install check: build the wheel, install it (lock as constraints) into a fresh virtual
# environment outside the checkout, and use it from an empty folder. Proves that all package
# data (recipes, the upload page, report templates) is inside the wheel.
#
#   scripts/check_wheel.sh            # uses uv from PATH (scripts/run puts it in .venv)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/visionops-wheel.XXXXXX")"
SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]]; then kill "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "==> building the wheel" >&2
uv build --quiet --wheel --out-dir "$WORK/dist" "$ROOT"
wheel="$(ls "$WORK"/dist/visionops-*.whl)"

echo "==> installing $(basename "$wheel") into a fresh environment" >&2
"$PYTHON" -m venv "$WORK/venv"
# uv's cache already holds every pinned wheel: nothing is downloaded twice.
VIRTUAL_ENV="$WORK/venv" uv pip install --quiet --compile-bytecode -c "$ROOT/requirements.lock" "$wheel"

mkdir "$WORK/project"
cd "$WORK/project"
unset PYTHONPATH
export PATH="$WORK/venv/bin:$PATH" MPLBACKEND=Agg WANDB_MODE=offline
installed="$(python -c 'import visionops, pathlib; print(pathlib.Path(visionops.__file__).parent)')"
[[ "$installed" == "$WORK/venv/"* ]] || { echo "error: visionops imported from $installed" >&2; exit 1; }

visionops --help >/dev/null
visionops doctor >/dev/null
# Captured first: `grep -q` exits at the first match, and pipefail would count the SIGPIPE.
recipes="$(visionops recipes list)"
grep -q fruits-vegetables <<<"$recipes"
shown="$(visionops recipes show fer2013)"
grep -q "data.channels" <<<"$shown"
visionops data fetch demo:shapes data.demo.images_per_class=6 data.demo.image_size=32
visionops quickstart --epochs 1 --device cpu data.demo.images_per_class=10 data.image_size=32 \
    train.batch_size=16 model.name=shufflenet_v2_x0_5

port="$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
visionops serve --port "$port" >"$WORK/serve.log" 2>&1 &
SERVER_PID=$!
page=""
for _ in $(seq 120); do
    if page="$(python -c "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:$port/', timeout=2).read().decode())" 2>/dev/null)"; then
        break
    fi
    sleep 0.5
done
grep -qi "<html" <<<"$page" || { echo "error: no upload page from the installed wheel" >&2; cat "$WORK/serve.log" >&2; exit 1; }
echo "wheel check ok: the installed wheel ran --help, doctor, recipes, fetch, quickstart and served its upload page"
