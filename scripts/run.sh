#!/usr/bin/env bash
# Starts kassa on one machine with its defaults: an SQLite store and the admin token under ./var.
# Called by `make run` as: ./scripts/run.sh build/release/kassa
# Any further arguments are passed to `kassa serve` (e.g. --listen 0.0.0.0:8080).
set -euo pipefail

bin=${1:-build/release/kassa}
shift || true
if [ ! -x "$bin" ]; then
  echo "run.sh: $bin is not built (try: make run)" >&2
  exit 1
fi

mkdir -p ./var
chmod 700 ./var

listen=${KASSA_LISTEN:-127.0.0.1:8080}
admin_listen=${KASSA_ADMIN_LISTEN:-127.0.0.1:8081}
token_file=${KASSA_ADMIN_TOKEN_FILE:-./var/admin.token}

cat <<INFO
kassa: starting with the store in ${KASSA_STORE:-sqlite:./var/kassa.db}
(the addresses below are the defaults; kassa prints the ones it really listens on)
  health:     curl http://${listen}/health/ready
  admin API:  curl -H "Authorization: Bearer \$(cat ${token_file})" http://${admin_listen}/admin/v1/stats
              (the token file is created on first start, mode 0600)
  logs:       JSON lines on stderr; stop with Ctrl-C
INFO

exec "$bin" serve "$@"
