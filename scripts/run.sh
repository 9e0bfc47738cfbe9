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

# Development merchant token (docs/auth.md): kassa signs it with its own key and, because
# KASSA_DEV_TRUST_OWN_KEY=1 here, accepts it. It is for the sandbox configuration's first party
# and its shops (config/sandbox.json), or party "demo" with shop "demo" without that file, with
# `kassa token issue`'s default roles (all four merchant roles; it lists them on stderr).
export KASSA_DEV_TRUST_OWN_KEY=${KASSA_DEV_TRUST_OWN_KEY:-1}
demo_party=demo
demo_shops=(demo)
if [ -f config/sandbox.json ] && command -v python3 >/dev/null 2>&1; then
  sandbox_ids=$(python3 - config/sandbox.json 2>/dev/null <<'PY' || true
import json, sys
parties = json.load(open(sys.argv[1])).get("parties") or {}
for pid in sorted(parties):
    print(pid, *sorted((parties[pid].get("shops") or {}).keys())[:8])
    break
PY
)
  if [ -n "$sandbox_ids" ]; then
    read -r demo_party rest <<<"$sandbox_ids"
    read -r -a demo_shops <<<"$rest"
  fi
fi
demo_token=""
if [ "$KASSA_DEV_TRUST_OWN_KEY" = 1 ]; then
  shop_flags=()
  for s in "${demo_shops[@]}"; do shop_flags+=(--shop "$s"); done
  if demo_token=$("$bin" token issue --party "$demo_party" "${shop_flags[@]}" --subject demo \
                    --ttl-s 86400); then
    (umask 077 && printf '%s\n' "$demo_token" >./var/demo.token)
  else
    echo "run.sh: could not issue a demo merchant token (see above)" >&2
    demo_token=""
  fi
fi

cat <<INFO
kassa: starting with the store in ${KASSA_STORE:-sqlite:./var/kassa.db}
(the addresses below are the defaults; kassa prints the ones it really listens on)
  health:     curl http://${listen}/health/ready
  admin API:  curl -H "Authorization: Bearer \$(cat ${token_file})" http://${admin_listen}/admin/v1/stats
              (the token file is created on first start, mode 0600)
  logs:       JSON lines on stderr; stop with Ctrl-C
INFO
if [ -n "$demo_token" ]; then
  cat <<INFO
  merchant:   a development token (24 h; party ${demo_party}, shops ${demo_shops[*]}), also in
              ./var/demo.token, accepted because KASSA_DEV_TRUST_OWN_KEY=1 (docs/auth.md):
              curl -H "Authorization: Bearer \$(cat var/demo.token)" http://${listen}/v2/processing/invoices/ID
${demo_token}
INFO
fi

exec "$bin" serve "$@"
