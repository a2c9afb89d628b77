#!/usr/bin/env bash
# Makes sure a PostgreSQL server binary is installed; the distributed test starts its own throw-away
# server on loopback (tests/pg.py), so nothing is left running.
set -euo pipefail
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
fi
