#!/bin/sh
# Runs once, when the postgres container initializes an empty data directory (mounted into
# /docker-entrypoint-initdb.d/): the owner role, which owns the database and runs the
# migrations, and the app role, which owns nothing and runs the service (APIs, workers).
# `unlearn db grant-app-role` (the compose `migrate` service, after every upgrade) then
# gives the app role its rights: on audit_log only SELECT and INSERT. See docs/security.md.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v owner="${DB_OWNER_ROLE:-unlearn_owner}" -v owner_password="$DB_OWNER_PASSWORD" \
     -v app="${DB_APP_ROLE:-unlearn_app}" -v app_password="$DB_APP_PASSWORD" \
     -v database="$POSTGRES_DB" <<'SQL'
CREATE ROLE :"owner" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'owner_password';
CREATE ROLE :"app" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT PASSWORD :'app_password';
ALTER DATABASE :"database" OWNER TO :"owner";
SQL
