#!/usr/bin/env bash
# Build the one-folder PyInstaller bundle (dist/parley/) and run its self-test offscreen.
# Skips the build when no packaged source changed since the last successful one.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
stamp=$( (git ls-files -s core app assets packaging pyproject.toml requirements-lite-weights.txt 2>/dev/null; \
          git diff 2>/dev/null; $py -m pip freeze 2>/dev/null) | sha256sum | cut -c1-16)
if [ -x dist/parley/parley ] && [ "$(cat dist/.parley-bundle 2>/dev/null)" = "$stamp" ]; then
  echo "bundle: up to date (dist/parley)" >&2
else
  echo "bundle: building dist/parley (a few minutes)" >&2
  rm -f dist/.parley-bundle
  (cd packaging && ../$py -m PyInstaller --noconfirm --log-level WARN \
      --distpath ../dist --workpath ../build/pyinstaller parley.spec)
  echo "$stamp" >dist/.parley-bundle
fi
echo "bundle: self-test" >&2
QT_QPA_PLATFORM=offscreen dist/parley/parley --self-test
