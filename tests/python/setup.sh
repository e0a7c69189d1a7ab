#!/usr/bin/env bash
# Makes the virtualenvs of the interoperability tests from PyPI:
#   tests/python/setup.sh [NAME ...]   (default: every tests/python/*.txt)
# Each NAME gets .venv/NAME from tests/python/NAME.txt; an environment whose
# requirements have not changed is kept. OFD_PYTHON (default python3) picks
# the interpreter, OFD_VENVS (default <repo>/.venv) the folder.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venvs=${OFD_VENVS:-$root/.venv}
python=${OFD_PYTHON:-python3}
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for f in "$here"/*.txt; do names+=("$(basename "$f" .txt)"); done
fi
for name in "${names[@]}"; do
  req="$here/$name.txt"
  dir="$venvs/$name"
  [ -f "$req" ] || { echo "no requirements file $req" >&2; exit 2; }
  if [ -x "$dir/bin/python" ] && cmp -s "$req" "$dir/.requirements"; then
    continue
  fi
  echo "== python virtualenv $name: $dir" >&2
  rm -rf "$dir"
  "$python" -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
  cp "$req" "$dir/.requirements"
done
