#!/usr/bin/env bash
# Installs the Debian packages kassa needs to build, test and benchmark, if any is missing.
# Idempotent: with everything present it does nothing and touches no network. It runs
# `apt-get update` at most once, and only when a package has to be installed.
set -euo pipefail

packages=(
  build-essential pkg-config
  libmicrohttpd-dev libjansson-dev libsqlite3-dev libpq-dev libssl-dev
  libcjose-dev libcurl4-openssl-dev librdkafka-dev
  libcriterion-dev
  postgresql-15 postgresql-contrib-15
  python3 python3-pytest python3-requests python3-jsonschema
  curl sqlite3 jq
  kcat python3-confluent-kafka
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
