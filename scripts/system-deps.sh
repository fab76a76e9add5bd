#!/usr/bin/env bash
# System packages the tests use: a real PostgreSQL server (multi-process path),
# Debian's Chromium (browser tests), and Prometheus with promtool (the alarm rules file, checked
# and fired by a real server), and Mosquitto (the MQTT broker line outputs publish to). Installed
# only when missing; needs root (CI runs as root).
set -euo pipefail
missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
[ -x /usr/bin/chromium ] || missing+=(chromium)
{ command -v promtool || [ -x /usr/bin/promtool ]; } >/dev/null 2>&1 || missing+=(prometheus)
[ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "system-deps: missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root." >&2
  echo "system-deps: the tests that need them will be skipped with a message." >&2
  exit 0
fi
echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
