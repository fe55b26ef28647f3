# Sourced by scripts/test: a throwaway PostgreSQL cluster for the test suite.
#
# start_test_postgres: unless FHIR_IMAGING_TEST_POSTGRES already names a server, install Debian's postgresql when
# initdb is missing, initialise a cluster in a temporary directory as an unprivileged user, start it on a free
# loopback port and export FHIR_IMAGING_TEST_POSTGRES; stop_test_postgres stops it (and its replica) and removes the
# directory.
#
# start_test_replica: unless FHIR_IMAGING_TEST_POSTGRES_REPLICA already names one, a streaming replica of that cluster
# (pg_basebackup -R as the replication role `replicator`, another port and data directory), for the read-replica
# tests; exports FHIR_IMAGING_TEST_POSTGRES_REPLICA and FHIR_IMAGING_TEST_REPLICA_PG_CTL (the tests stop and start
# it).

start_test_postgres() {
    if [ -n "${FHIR_IMAGING_TEST_POSTGRES:-}" ]; then
        echo "PostgreSQL for the tests: $FHIR_IMAGING_TEST_POSTGRES (given)"
        return 0
    fi
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
        echo "installing Debian's postgresql package"
        if [ "$(id -u)" != 0 ]; then
            echo "PostgreSQL is missing and installing it needs root: apt-get install postgresql" >&2
            return 1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    fi
    PG_TEST_DIR=$(mktemp -d /tmp/fhir-imaging-pg.XXXXXX)
    local run=()
    if [ "$(id -u)" = 0 ]; then
        id -u postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
        chown postgres "$PG_TEST_DIR"
        chmod 700 "$PG_TEST_DIR"
        run=(runuser -u postgres --)
    fi
    local port
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "${run[@]}" "$bin/initdb" -D "$PG_TEST_DIR/data" -A trust -U fhir --no-sync -E UTF8 >"$PG_TEST_DIR/initdb.log" 2>&1 \
        || { cat "$PG_TEST_DIR/initdb.log" >&2; return 1; }
    # Settings in the cluster's own file, so that the restart test can stop and start it with plain pg_ctl.
    cat >>"$PG_TEST_DIR/data/postgresql.conf" <<CONF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$PG_TEST_DIR'
max_connections = 300
fsync = off
full_page_writes = off
wal_level = replica
max_wal_senders = 10
CONF
    echo "host replication replicator 127.0.0.1/32 trust" >>"$PG_TEST_DIR/data/pg_hba.conf"
    "${run[@]}" "$bin/pg_ctl" -D "$PG_TEST_DIR/data" -l "$PG_TEST_DIR/server.log" -w -t 60 start >/dev/null \
        || { cat "$PG_TEST_DIR/server.log" >&2; return 1; }
    PG_TEST_BIN=$bin
    PG_TEST_RUN=("${run[@]}")
    export FHIR_IMAGING_TEST_POSTGRES="postgresql://fhir@127.0.0.1:$port/postgres"
    export FHIR_IMAGING_TEST_PG_CTL="${run[*]} $bin/pg_ctl -D $PG_TEST_DIR/data -l $PG_TEST_DIR/server.log"
    echo "PostgreSQL for the tests: $FHIR_IMAGING_TEST_POSTGRES (throwaway cluster in $PG_TEST_DIR)"
}

start_test_replica() {
    if [ -n "${FHIR_IMAGING_TEST_POSTGRES_REPLICA:-}" ]; then
        echo "PostgreSQL replica for the tests: $FHIR_IMAGING_TEST_POSTGRES_REPLICA (given)"
        return 0
    fi
    if [ -z "${PG_TEST_DIR:-}" ]; then
        echo "start_test_replica: no cluster started by start_test_postgres to replicate; set FHIR_IMAGING_TEST_POSTGRES_REPLICA" >&2
        return 1
    fi
    local primary_port port
    primary_port=${FHIR_IMAGING_TEST_POSTGRES##*:}
    primary_port=${primary_port%%/*}
    "${PG_TEST_RUN[@]}" "$PG_TEST_BIN/psql" -X -q -h 127.0.0.1 -p "$primary_port" -U fhir -d postgres \
        -c "CREATE ROLE replicator WITH REPLICATION LOGIN" >/dev/null || return 1
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "${PG_TEST_RUN[@]}" "$PG_TEST_BIN/pg_basebackup" -h 127.0.0.1 -p "$primary_port" -U replicator \
        -D "$PG_TEST_DIR/replica" -R -X stream --no-sync >"$PG_TEST_DIR/basebackup.log" 2>&1 \
        || { cat "$PG_TEST_DIR/basebackup.log" >&2; return 1; }
    cat >>"$PG_TEST_DIR/replica/postgresql.conf" <<CONF
port = $port
hot_standby = on
checkpoint_timeout = 30s
CONF
    "${PG_TEST_RUN[@]}" "$PG_TEST_BIN/pg_ctl" -D "$PG_TEST_DIR/replica" -l "$PG_TEST_DIR/replica.log" -w -t 60 start \
        >/dev/null || { cat "$PG_TEST_DIR/replica.log" >&2; return 1; }
    export FHIR_IMAGING_TEST_POSTGRES_REPLICA="postgresql://fhir@127.0.0.1:$port/postgres"
    export FHIR_IMAGING_TEST_REPLICA_PG_CTL="${PG_TEST_RUN[*]} $PG_TEST_BIN/pg_ctl -D $PG_TEST_DIR/replica -l $PG_TEST_DIR/replica.log"
    echo "PostgreSQL replica for the tests: $FHIR_IMAGING_TEST_POSTGRES_REPLICA (streaming from port $primary_port)"
}

stop_test_postgres() {
    if [ -n "${PG_TEST_DIR:-}" ]; then
        if [ -d "$PG_TEST_DIR/replica" ]; then
            "${PG_TEST_RUN[@]}" "$PG_TEST_BIN/pg_ctl" -D "$PG_TEST_DIR/replica" -m immediate stop >/dev/null 2>&1 || true
        fi
        "${PG_TEST_RUN[@]}" "$PG_TEST_BIN/pg_ctl" -D "$PG_TEST_DIR/data" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$PG_TEST_DIR"
        PG_TEST_DIR=
    fi
}
