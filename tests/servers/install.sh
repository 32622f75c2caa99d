#!/usr/bin/env bash
# Install the real servers that the integration tests start on loopback:
#   influxd (InfluxDB 1.6, Debian), victoria-metrics (Debian),
#   secantusd-py (SecantusDB, PyPI), moto_server (moto, PyPI).
# Idempotent: installs only what `command -v` can't find; safe to run from .ci/run.
# It only installs: tests start each server themselves on free ports with temp dirs.
set -euo pipefail

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
# Versions verified to work; override from the environment if needed.
SECANTUSDB_SPEC="${SECANTUSDB_SPEC:-secantusdb==0.7.0b3}"   # only beta releases exist on PyPI
MOTO_SPEC="${MOTO_SPEC:-moto[server]==5.2.1}"                # [server] brings flask, needed by moto_server

# --- Debian packages ---------------------------------------------------------
apt_pkgs=()
command -v influxd          >/dev/null || apt_pkgs+=(influxdb influxdb-client)  # client = `influx` CLI
command -v victoria-metrics >/dev/null || apt_pkgs+=(victoria-metrics)
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  # Both packages ship init scripts whose postinst would start a service on :8086/:8428.
  # A policy-rc.d that exits 101 makes invoke-rc.d refuse; add one only for this install.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  # A fresh machine may have stale or no package lists; update only when installing.
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
fi

# --- PyPI packages -----------------------------------------------------------
py_pkgs=()
command -v secantusd-py >/dev/null || py_pkgs+=("$SECANTUSDB_SPEC")
command -v moto_server  >/dev/null || py_pkgs+=("$MOTO_SPEC")
if [ ${#py_pkgs[@]} -gt 0 ]; then
  pip_args=(--quiet --disable-pip-version-check --root-user-action=ignore)
  # pyenv's site-packages is writable, so install there (its shims are on PATH);
  # `--user` would land in ~/.local/bin, which is often not on PATH.
  if ! python3 -c 'import os,sysconfig,sys; sys.exit(not os.access(sysconfig.get_path("purelib"), os.W_OK))'; then
    pip_args+=(--user); export PATH="$(python3 -m site --user-base)/bin:$PATH"
  fi
  # A Debian system python is "externally managed" (PEP 668) and refuses plain pip.
  if [ -e "$(python3 -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')/EXTERNALLY-MANAGED" ]; then
    pip_args+=(--break-system-packages)
  fi
  python3 -m pip install "${pip_args[@]}" "${py_pkgs[@]}"
  command -v pyenv >/dev/null && pyenv rehash || true   # create shims for the new scripts
  hash -r
fi

# --- Report ------------------------------------------------------------------
missing=0
for b in influxd victoria-metrics secantusd-py moto_server; do
  p="$(command -v "$b")" || { p=MISSING; missing=1; }
  printf '%-17s %s\n' "$b" "$p"
done
exit "$missing"
