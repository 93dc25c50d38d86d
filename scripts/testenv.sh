#!/usr/bin/env bash
# Start or stop the test environment: a user-mode PulseAudio daemon with a null sink (its monitor is the loopback
# source) in a private XDG_RUNTIME_DIR, and an Xvfb screen.
#   eval "$(scripts/testenv.sh start)"   prints the exports to use (XDG_RUNTIME_DIR, PULSE_SERVER, DISPLAY...)
#   scripts/testenv.sh stop              stops what start started (safe to call twice)
# State lives in $PARLEY_TESTENV_DIR (default .testenv/ in the repository).
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${PARLEY_TESTENV_DIR:-$root/.testenv}
sink=${PARLEY_TEST_SINK:-parley_sink}
display=${PARLEY_TEST_DISPLAY:-:87}

start() {
  mkdir -p "$dir"
  mkdir -p -m 700 "$dir/runtime" "$dir/home"
  chmod 700 "$dir/runtime" "$dir/home"
  local missing=()
  command -v pulseaudio >/dev/null || missing+=(pulseaudio)
  command -v pactl >/dev/null || missing+=(pulseaudio-utils)
  command -v Xvfb >/dev/null || missing+=(xvfb)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "testenv: missing system packages: ${missing[*]} (apt-get install ${missing[*]})" >&2
  fi
  if command -v pulseaudio >/dev/null; then
    if ! XDG_RUNTIME_DIR="$dir/runtime" HOME="$dir/home" pactl info >/dev/null 2>&1; then
      XDG_RUNTIME_DIR="$dir/runtime" HOME="$dir/home" pulseaudio --start --exit-idle-time=-1 -n \
        --load=module-native-protocol-unix \
        --load="module-null-sink sink_name=$sink rate=48000 sink_properties=device.description=ParleyTestSink" \
        --load=module-always-sink --daemonize=yes --log-target="file:$dir/pulse.log" >&2 || \
        echo "testenv: pulseaudio failed to start, see $dir/pulse.log" >&2
      for _ in $(seq 50); do
        XDG_RUNTIME_DIR="$dir/runtime" HOME="$dir/home" pactl info >/dev/null 2>&1 && break
        sleep 0.1
      done
    fi
    XDG_RUNTIME_DIR="$dir/runtime" HOME="$dir/home" pactl set-default-sink "$sink" >&2 || true
    XDG_RUNTIME_DIR="$dir/runtime" HOME="$dir/home" pactl set-default-source "$sink.monitor" >&2 || true
    echo "export XDG_RUNTIME_DIR='$dir/runtime'"
    echo "export PULSE_RUNTIME_PATH='$dir/runtime/pulse'"
    echo "export PARLEY_TEST_SINK='$sink'"
    echo "export PARLEY_TESTENV_DIR='$dir'"
  fi
  if command -v Xvfb >/dev/null; then
    if [ ! -f "$dir/xvfb.pid" ] || ! kill -0 "$(cat "$dir/xvfb.pid")" 2>/dev/null; then
      Xvfb "$display" -screen 0 1280x900x24 -nolisten tcp >"$dir/xvfb.log" 2>&1 &
      echo $! >"$dir/xvfb.pid"
      for _ in $(seq 50); do [ -e "/tmp/.X11-unix/X${display#:}" ] && break; sleep 0.1; done
    fi
    echo "export DISPLAY='$display'"
  fi
}

stop() {
  if [ -d "$dir/runtime" ] && command -v pulseaudio >/dev/null; then
    XDG_RUNTIME_DIR="$dir/runtime" HOME="$dir/home" pulseaudio --kill 2>/dev/null || true
  fi
  if [ -f "$dir/xvfb.pid" ]; then
    kill "$(cat "$dir/xvfb.pid")" 2>/dev/null || true
    rm -f "$dir/xvfb.pid"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
