#!/usr/bin/env bash
# Install (Debian package) and start a local PostgreSQL server on 127.0.0.1:5432, with trust
# auth on loopback only, and create the test database. Safe to run again.
set -euo pipefail
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
local   all all                peer
host    all all 127.0.0.1/32   trust
host    all all ::1/128        trust
HBA
sed -i "s/^#\?listen_addresses.*/listen_addresses = '127.0.0.1'/" "$conf/postgresql.conf"
if pg_lsclusters -h | grep "^$version main" | grep -q online; then
    pg_ctlcluster "$version" main reload
else
    pg_ctlcluster "$version" main start
fi
for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p 5432 && break
    sleep 1
done
pg_isready -h 127.0.0.1 -p 5432
psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'salesml_test'" | grep -q 1 \
    || psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE salesml_test" >/dev/null
echo "postgres $version: running on 127.0.0.1:5432, database salesml_test"
