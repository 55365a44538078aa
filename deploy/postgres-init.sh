#!/bin/sh
# First start of docker-compose.yml's PostgreSQL (an empty data directory): the broker's own role, not a superuser,
# owning its database. The broker runs its migrations as that owner; a superuser could also read files and run
# programs on the server (COPY ... PROGRAM), which nothing here needs. Run by the image's entrypoint from
# /docker-entrypoint-initdb.d as the superuser POSTGRES_USER; BROKER_DB_PASSWORD comes from the compose file.
set -eu
# The password goes through a psql variable (:'pw' quotes it as a literal), never into the SQL text by the shell.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres -v pw="$BROKER_DB_PASSWORD" <<'SQL'
CREATE ROLE broker LOGIN PASSWORD :'pw' NOSUPERUSER NOCREATEDB NOCREATEROLE;
CREATE DATABASE broker OWNER broker;
REVOKE ALL ON DATABASE broker FROM PUBLIC;
SQL
