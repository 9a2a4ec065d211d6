#!/usr/bin/env bash
# Installs (Debian's postgresql package) and starts a local PostgreSQL server on 127.0.0.1 if none is running,
# creates a test user and database, and prints the URL to export as AIRA_TEST_POSTGRES_URL:
#
#   export AIRA_TEST_POSTGRES_URL="$(.ci/postgres.sh)"
#
# Idempotent: a second run finds everything in place and prints the same URL. Only the URL goes to stdout;
# progress goes to stderr. Needs root (apt-get, and running commands as the postgres user).
# Settings (environment): AIRA_PG_USER (aira), AIRA_PG_PASSWORD (aira), AIRA_PG_DB (aira_test).
set -euo pipefail

PG_USER="${AIRA_PG_USER:-aira}"
PG_PASSWORD="${AIRA_PG_PASSWORD:-aira}"
PG_DB="${AIRA_PG_DB:-aira_test}"

log() { echo "[postgres.sh] $*" >&2; }
die() { log "error: $*"; exit 1; }

for v in "$PG_USER" "$PG_DB"; do
  [[ "$v" =~ ^[a-z_][a-z0-9_]*$ ]] || die "user/database names must match [a-z_][a-z0-9_]*, got '$v'"
done
[[ "$PG_PASSWORD" != *"'"* ]] || die "AIRA_PG_PASSWORD must not contain a single quote"

as_postgres() {
  if [[ "$(id -un)" == postgres ]]; then "$@"; else runuser -u postgres -- "$@"; fi
}

if ! command -v pg_lsclusters >/dev/null 2>&1; then
  [[ "$(id -u)" == 0 ]] || die "PostgreSQL is not installed and installing it needs root"
  command -v apt-get >/dev/null 2>&1 || die "PostgreSQL is not installed and apt-get is not available"
  log "installing postgresql (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
fi

# The first cluster Debian's tooling knows about; make one if the package left none.
read -r PG_VERSION PG_CLUSTER PG_PORT PG_STATUS _ < <(pg_lsclusters --no-header | head -n 1) || true
if [[ -z "${PG_VERSION:-}" ]]; then
  PG_VERSION="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
  [[ -n "$PG_VERSION" ]] || die "no PostgreSQL version found under /usr/lib/postgresql"
  log "creating cluster $PG_VERSION/main"
  pg_createcluster "$PG_VERSION" main >&2
  read -r PG_VERSION PG_CLUSTER PG_PORT PG_STATUS _ < <(pg_lsclusters --no-header | head -n 1)
fi

if [[ "$PG_STATUS" != online* ]]; then
  log "starting cluster $PG_VERSION/$PG_CLUSTER on port $PG_PORT"
  # pg_ctlcluster works without systemd (containers); listen on loopback only.
  pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start -- -o "-c listen_addresses=127.0.0.1" >&2 \
    || pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start >&2
fi

for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 -p "$PG_PORT" && break
  sleep 1
done
pg_isready -q -h 127.0.0.1 -p "$PG_PORT" || die "server did not become ready on 127.0.0.1:$PG_PORT"

psql_admin() { as_postgres psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres "$@"; }

if [[ "$(psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname='$PG_USER'")" != 1 ]]; then
  log "creating user $PG_USER"
  psql_admin -c "CREATE ROLE $PG_USER LOGIN PASSWORD '$PG_PASSWORD'" >&2
else
  psql_admin -c "ALTER ROLE $PG_USER LOGIN PASSWORD '$PG_PASSWORD'" >&2
fi
if [[ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname='$PG_DB'")" != 1 ]]; then
  log "creating database $PG_DB"
  psql_admin -c "CREATE DATABASE $PG_DB OWNER $PG_USER" >&2
fi

# Check the URL works as printed (password auth over TCP) before handing it out.
PGPASSWORD="$PG_PASSWORD" psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d "$PG_DB" -tAc "SELECT 1" >/dev/null \
  || die "cannot log in as $PG_USER to $PG_DB on 127.0.0.1:$PG_PORT (check pg_hba.conf)"

echo "postgresql://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB"
