#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on loopback, for the PostgreSQL store's tests.
#
#   .ci/postgres.sh start DATA_DIR PORT   initdb (if DATA_DIR is new), start, create the
#                                         database `magicpush_test`; prints the URL to use
#                                         (export it as MAGICPUSH_TEST_DATABASE_URL)
#   .ci/postgres.sh stop DATA_DIR         stop the cluster (nothing if it is not running)
#
# With `openssl` at hand the server also speaks TLS, with a certificate for 127.0.0.1 and
# localhost issued by a CA made for the cluster (its file is the server's `ssl_ca_file`, so a
# test finds it with `SHOW ssl_ca_file`); plain connections stay allowed.
#
# PostgreSQL refuses to run as root: as root, the cluster runs as the `postgres` system user
# that Debian's package creates (installed with apt-get when no initdb is found). Only
# 127.0.0.1 listens, with `trust` authentication: a test cluster, never a server to keep.
set -euo pipefail

usage() {
  echo "usage: $0 start DATA_DIR PORT | stop DATA_DIR" >&2
  exit 2
}

# The newest installed server's binaries (Debian keeps them per major version).
pg_bin() {
  local dir
  dir=$(compgen -G '/usr/lib/postgresql/*/bin' | sort -V | tail -1 || true)
  if [ -z "$dir" ] && command -v initdb >/dev/null 2>&1; then
    dir=$(dirname "$(command -v initdb)")
  fi
  echo "$dir"
}

# Runs a command as the cluster's owner: `postgres` when we are root, ourselves otherwise.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

start() {
  local data=$1 port=$2 bin
  bin=$(pg_bin)
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "installing Debian's postgresql" >&2
      apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
      bin=$(pg_bin)
    fi
    if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
      echo "no PostgreSQL server here (initdb not found) and it cannot be installed" >&2
      exit 1
    fi
  fi
  mkdir -p "$data"
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$data"
  fi
  chmod 0700 "$data"
  if [ ! -f "$data/PG_VERSION" ]; then
    as_owner "$bin/initdb" -D "$data" -U postgres -A trust -E UTF8 --no-locale >"$data.initdb.log" 2>&1 || {
      cat "$data.initdb.log" >&2
      exit 1
    }
  fi
  local tls=""
  if command -v openssl >/dev/null 2>&1; then
    if [ ! -f "$data/server.crt" ]; then
      make_certs "$data" >"$data.openssl.log" 2>&1 || {
        cat "$data.openssl.log" >&2
        exit 1
      }
    fi
    tls="-c ssl=on -c ssl_cert_file=$data/server.crt -c ssl_key_file=$data/server.key -c ssl_ca_file=$data/ca.crt"
  fi
  # fsync and synchronous_commit stay on (the defaults): the tests check durable commits.
  # The socket goes in the data directory (the default /var/run/postgresql may not exist).
  as_owner "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $data -c max_connections=300 $tls" start >&2 || {
    tail -30 "$data/server.log" >&2 || true
    exit 1
  }
  if ! as_owner "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = 'magicpush_test'" | grep -q 1; then
    as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres magicpush_test
  fi
  echo "postgres://postgres@127.0.0.1:$port/magicpush_test?sslmode=disable"
}

# A CA and a server certificate it issued (127.0.0.1, localhost), short-lived, in the data
# directory: the key readable by the server only, the CA's certificate by anyone.
make_certs() {
  local d=$1
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
    -subj /CN=magicpush-test-ca -keyout "$d/ca.key" -out "$d/ca.crt"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj /CN=localhost -keyout "$d/server.key" -out "$d/server.csr"
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$d/server.ext"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
    -days 7 -extfile "$d/server.ext" -out "$d/server.crt"
  rm -f "$d/ca.key" "$d/server.csr" "$d/server.ext" "$d/ca.srl"
  chmod 0644 "$d/ca.crt" "$d/server.crt"
  chmod 0600 "$d/server.key"
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$d/ca.crt" "$d/server.crt" "$d/server.key"
  fi
}

stop() {
  local data=$1 bin
  bin=$(pg_bin)
  [ -n "$bin" ] && [ -f "$data/postmaster.pid" ] || return 0
  as_owner "$bin/pg_ctl" -D "$data" -m fast -w stop >&2 || true
}

case "${1:-}" in
  start) [ $# = 3 ] || usage; start "$2" "$3" ;;
  stop) [ $# = 2 ] || usage; stop "$2" ;;
  *) usage ;;
esac
