#!/usr/bin/env bash
# Create the PostgreSQL database named in SQUIRREL_DATABASE_URL (default: squirrel) if missing.
set -euo pipefail
url="${SQUIRREL_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/squirrel}"
name="${url##*/}"; name="${name%%\?*}"
base="${url%/*}/postgres"
if ! psql "$base" -tAc "select 1 from pg_database where datname='${name}'" | grep -q 1; then
  psql "$base" -qc "create database \"${name}\"" && echo "ensure_db: created database ${name}"
else
  echo "ensure_db: database ${name} exists"
fi
