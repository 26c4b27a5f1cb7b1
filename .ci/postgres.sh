#!/usr/bin/env bash
# Install and start a local PostgreSQL server on 127.0.0.1:5432 with trust auth for the
# postgres role (loopback only). Idempotent: does nothing when a server already answers.
set -euo pipefail
if command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "postgres: already running"
    exit 0
fi
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
fi
version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h 2>/dev/null | grep -q "^$version main"; then
    pg_createcluster "$version" main >/dev/null
fi
conf="/etc/postgresql/$version/main"
cat > "$conf/pg_hba.conf" <<'HBA'
local   all all                trust
host    all all 127.0.0.1/32   trust
host    all all ::1/128        trust
HBA
sed -i "s/^#\?listen_addresses.*/listen_addresses = '127.0.0.1'/" "$conf/postgresql.conf"
pg_ctlcluster "$version" main restart || pg_ctlcluster "$version" main start
for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p 5432 && break
    sleep 1
done
pg_isready -h 127.0.0.1 -p 5432
echo "postgres: $version running on 127.0.0.1:5432"
