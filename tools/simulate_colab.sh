#!/usr/bin/env bash
# Run notebooks the way a Colab reader does, on this machine, and prove that the
# setup cell changes none of the packages already there.
#
#   tools/simulate_colab.sh notebooks/ch04/attention_maps.ipynb [...]
#
# 1. A fresh venv gets Colab's usual preinstalled packages (torch, transformers,
#    scikit-learn, ...), and a stub `google.colab` module that every Python
#    process imports at start-up (a .pth line), as Colab's kernel does, so that
#    the setup cell's Colab branch runs.
# 2. git is told to fetch the repository URL of _config.yml from this clone
#    (url.<clone>.insteadOf), so the setup cell's `pip install git+<URL>` is
#    exactly what Colab runs, minus the network.
# 3. Each notebook is copied alone into an empty folder (no repository around
#    it) and executed top to bottom, setup cell included.
# 4. `pip freeze` before and after: every package present before must be
#    unchanged; only new packages may appear.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${COLAB_SIM_DIR:-$(mktemp -d /tmp/colab-sim.XXXXXX)}"
PREINSTALLED="torch==2.14.1 torchvision==0.29.1 numpy pandas matplotlib scikit-learn scikit-image
  transformers tqdm safetensors pillow ipywidgets ipykernel nbclient nbformat requests"
URL="$(python3 -c "import yaml,sys; print(yaml.safe_load(open('$ROOT/_config.yml'))['repository']['url'].rstrip('/'))" 2>/dev/null \
  || grep -A2 '^repository:' "$ROOT/_config.yml" | sed -n 's/^ *url: *//p')"

echo "simulated Colab runtime in $WORK; repository $URL served from $ROOT"
python3 -m venv "$WORK/venv"
PY="$WORK/venv/bin/python"
"$PY" -m pip install --quiet --upgrade pip
# shellcheck disable=SC2086
"$PY" -m pip install --quiet $PREINSTALLED
SITE="$("$PY" -c 'import site; print(site.getsitepackages()[0])')"
mkdir -p "$SITE/google/colab"
touch "$SITE/google/__init__.py" "$SITE/google/colab/__init__.py"
echo "import google.colab" > "$SITE/zz_colab_stub.pth"
"$PY" -m pip freeze --all | sort > "$WORK/before.txt"

export GIT_CONFIG_GLOBAL="$WORK/gitconfig"
git config --global url."$ROOT".insteadOf "$URL"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

status=0
for notebook in "$@"; do
  folder="$WORK/run/$(basename "$notebook" .ipynb)"
  mkdir -p "$folder"
  cp "$ROOT/$notebook" "$folder/"
  echo "== $notebook"
  (cd "$folder" && "$PY" - "$(basename "$notebook")" <<'PYEOF') || status=1
import sys, time
import nbformat
from nbclient import NotebookClient
path = sys.argv[1]
nb = nbformat.read(path, as_version=4)
start = time.perf_counter()
NotebookClient(nb, timeout=600, kernel_name="python3").execute()
print(f"   ran top to bottom in {time.perf_counter() - start:.1f} s")
PYEOF
done

"$PY" -m pip freeze --all | sort > "$WORK/after.txt"
changed="$(comm -23 "$WORK/before.txt" "$WORK/after.txt")"
if [ -n "$changed" ]; then
  echo "the setup cell changed preinstalled packages:"; echo "$changed"
  comm -13 "$WORK/before.txt" "$WORK/after.txt"
  status=1
else
  echo "no preinstalled package changed; added: $(comm -13 "$WORK/before.txt" "$WORK/after.txt" | tr '\n' ' ')"
fi
exit $status
