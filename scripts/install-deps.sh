#!/usr/bin/env bash
# Installs the Debian packages kassa needs to build, test and benchmark, if any is missing, then
# the npm packages of package-lock.json (Swagger UI for /docs, playwright-core for the browser
# test) into node_modules when it is missing or older than the lock file.
# Idempotent: with everything present it does nothing and touches no network. It runs
# `apt-get update` at most once, and only when a package has to be installed.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential pkg-config
  libmicrohttpd-dev libjansson-dev libsqlite3-dev libpq-dev libssl-dev
  libcjose-dev libcurl4-openssl-dev librdkafka-dev
  libcriterion-dev
  postgresql-15
  python3 python3-pytest python3-requests python3-jsonschema
  curl sqlite3 jq
  kcat python3-confluent-kafka
  chromium
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
# Node.js and npm: Debian's nodejs and npm, unless a node and npm are already there (a nodejs
# package from elsewhere may carry npm itself and conflict with Debian's npm package).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm's own record of an install (node_modules/.package-lock.json) is the stamp. Package scripts
# never run (--ignore-scripts): the packages are files to embed and a library, nothing to build,
# and an install script could reach the network.
stamp=node_modules/.package-lock.json
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ]; then
  echo "install-deps: npm ci (node_modules from package-lock.json)" >&2
  SCARF_ANALYTICS=false npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null
  touch "$stamp"
fi
