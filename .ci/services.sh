#!/usr/bin/env bash
# Private test services for this checkout: PostgreSQL (registry), Redis (online store; a second one
# speaking only TLS, for rediss://; a six-node Redis Cluster on ports 46400..46405), a
# single-node Kafka broker (stream sources; its jars come from Maven Central via .ci/jvm/pom.xml) and
# an S3-compatible object store (MinIO, whose conditional PUT is atomic, built from source with
# `go install` into .ci/cache/minio; at http://127.0.0.1:59100). Not a server but installed the same
# way: `browser`, Debian's chromium and chromium-driver, for the tests that open the quality report and
# the web catalog.
#
#   .ci/services.sh install [svc...]           install missing binaries (Debian's packages; s3: go)
#   .ci/services.sh start [--record FILE] [svc...]
#                                              start each service unless it already answers; the
#                                              names of the services THIS call started are appended
#                                              to FILE (if given) and to .ci/state/started
#   .ci/services.sh stop [--from FILE] [svc...]
#                                              stop services this script started (those listed in
#                                              FILE, default .ci/state/started); never touches a
#                                              server it found already running
#   .ci/services.sh env                        print `export VAR=...` lines for the tests
#   .ci/services.sh status                     say which services answer
#
# Each service is a set of shell functions named <svc>_install, <svc>_up (answers?), <svc>_start,
# <svc>_stop and <svc>_env, plus an entry in SERVICES.
#
#   .ci/services.sh jars PROFILE...            fetch the jars of a .ci/jvm/pom.xml profile (kafka-broker,
#                                              flink-kafka, spark-delta) into .ci/cache/jars/PROFILE (cached by pom hash)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="$ROOT/.ci/state"
STARTED_LIST="$STATE/started"
SERVICES=(postgres redis redis_tls redis_cluster kafka s3 browser)
WAIT_SECONDS="${FS_SERVICES_WAIT_SECONDS:-60}"

PG_PORT=55432
PG_USER=fs
PG_PASSWORD=fs
PG_DATABASES=(fs_test)
PG_OS_USER=fsci
REDIS_PORT=56379
KAFKA_PORT=59092
KAFKA_CONTROLLER_PORT=59093
S3_PORT=59100
JVM_POM="$ROOT/.ci/jvm/pom.xml"
JARS_CACHE="$ROOT/.ci/cache/jars"

log() { echo "[services] $*" >&2; }
die() { echo "[services] ERROR: $*" >&2; exit 1; }

# Print the last lines of a log file to stderr, for "did not come up" failures.
tail_log() {
    local file="$1"
    if [[ -f "$file" ]]; then
        echo "----- last 40 lines of $file -----" >&2
        tail -n 40 "$file" >&2 || true
        echo "-----------------------------------" >&2
    else
        echo "(no log file at $file)" >&2
    fi
}

# wait_until <description> <logfile> <command...>: poll the command until it succeeds or time out.
wait_until() {
    local what="$1" logfile="$2"; shift 2
    local deadline=$((SECONDS + WAIT_SECONDS))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            echo "[services] ERROR: $what did not answer within ${WAIT_SECONDS}s" >&2
            tail_log "$logfile"
            exit 1
        fi
        sleep 0.5
    done
}

# ---------------------------------------------------------------- apt helpers
APT_UPDATED=0
apt_install() {
    [[ $(id -u) -eq 0 ]] || die "need root to apt-get install $* (or install it yourself)"
    export DEBIAN_FRONTEND=noninteractive
    # Keep package post-install scripts from starting system-wide daemons we do not want.
    local made_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    local rc=0
    if ((APT_UPDATED == 0)); then
        log "apt-get update"
        apt-get update -qq || rc=$?
        APT_UPDATED=1
    fi
    if ((rc == 0)); then
        log "apt-get install $*"
        apt-get install -y -qq --no-install-recommends "$@" || rc=$?
    fi
    if ((made_policy)); then rm -f /usr/sbin/policy-rc.d; fi
    ((rc == 0)) || die "apt-get failed for: $*"
}

# Run a command as the unprivileged OS user that owns the PostgreSQL data (postgres refuses root).
as_pg_user() {
    if [[ $(id -u) -eq 0 ]]; then
        # From / so the user does not trip over a working directory it may not enter.
        (cd / && runuser -u "$PG_OS_USER" -- "$@")
    else
        "$@"
    fi
}

# ---------------------------------------------------------------- postgres
pg_bindir() {
    local d
    # Newest installed major version first.
    # shellcheck disable=SC2012
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n -r); do
        if [[ -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres" ]]; then
            echo "$d"; return 0
        fi
    done
    return 1
}

# Where the cluster lives: .ci/state/pg, owned by the unprivileged user. If that user cannot reach
# the checkout (e.g. a clone under /root), the files go to a per-checkout folder in /var/tmp and
# .ci/state/pg and .ci/state/pg.log become symlinks to them.
pg_paths() {
    PG_DATA="$STATE/pg"; PG_LOG="$STATE/pg.log"; PG_SOCK="$STATE/pgsock"; PG_FALLBACK=""
    if [[ $(id -u) -eq 0 ]] && ! as_pg_user test -x "$STATE" 2>/dev/null; then
        PG_FALLBACK="/var/tmp/featurestore-ci-$(echo -n "$ROOT" | sha1sum | cut -c1-12)"
        PG_DATA="$PG_FALLBACK/pg"; PG_LOG="$PG_FALLBACK/pg.log"; PG_SOCK="$PG_FALLBACK/pgsock"
    fi
    # A unix socket path must stay under ~107 bytes.
    if (( ${#PG_SOCK} > 80 )); then
        PG_SOCK="/tmp/fs-pgsock-$(echo -n "$ROOT" | sha1sum | cut -c1-12)"
    fi
}

postgres_install() {
    if pg_bindir >/dev/null; then
        log "postgres: binaries present in $(pg_bindir)"
    else
        apt_install postgresql
        pg_bindir >/dev/null || die "postgresql installed but no /usr/lib/postgresql/*/bin/initdb found"
    fi
    if ! command -v runuser >/dev/null; then apt_install util-linux; fi
}

postgres_up() {
    local bin; bin="$(pg_bindir)" || return 1
    "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"
}

postgres_ensure_os_user() {
    [[ $(id -u) -eq 0 ]] || return 0
    if ! id "$PG_OS_USER" >/dev/null 2>&1; then
        log "postgres: creating system user $PG_OS_USER"
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$PG_OS_USER"
    fi
}

# Create role and databases if missing, through our own cluster's unix socket (trust auth).
postgres_provision() {
    local bin="$1" db
    local psql=("$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d postgres)
    "${psql[@]}" -c "DO \$\$ BEGIN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
            CREATE ROLE $PG_USER LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
        END IF;
    END \$\$;"
    for db in "${PG_DATABASES[@]}"; do
        if [[ -z "$("${psql[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]]; then
            log "postgres: creating database $db"
            "${psql[@]}" -c "CREATE DATABASE $db OWNER $PG_USER"
        fi
    done
}

# Check that the test role can log in over TCP with its password (works for any server on the port).
postgres_check_login() {
    local bin="$1"
    PGPASSWORD="$PG_PASSWORD" "$bin/psql" -X -q -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" \
        -d "${PG_DATABASES[0]}" -tAc "SELECT 1" >/dev/null
}

postgres_start() {
    local bin; bin="$(pg_bindir)" || die "postgres: not installed (run: $0 install)"
    postgres_ensure_os_user
    mkdir -p "$STATE"
    pg_paths
    if postgres_up; then
        log "postgres: already answering on 127.0.0.1:$PG_PORT; leaving it running"
        if [[ -S "$PG_SOCK/.s.PGSQL.$PG_PORT" ]]; then postgres_provision "$bin"; fi
        postgres_check_login "$bin" \
            || die "postgres on port $PG_PORT answers but role $PG_USER cannot log in to ${PG_DATABASES[0]}"
        return 0   # not started by this call
    fi
    if [[ -n "$PG_FALLBACK" ]]; then
        log "postgres: $PG_OS_USER cannot reach $STATE; keeping the cluster in $PG_FALLBACK"
        mkdir -p "$PG_FALLBACK"
        chmod 755 "$PG_FALLBACK"
        ln -sfn "$PG_DATA" "$STATE/pg"
        ln -sfn "$PG_LOG" "$STATE/pg.log"
    fi
    mkdir -p "$PG_SOCK"
    touch "$PG_LOG"
    if [[ $(id -u) -eq 0 ]]; then
        chown "$PG_OS_USER" "$PG_SOCK" "$PG_LOG"
    fi
    if [[ ! -f "$PG_DATA/PG_VERSION" ]]; then
        log "postgres: initdb into $PG_DATA"
        rm -rf "$PG_DATA"
        mkdir -p "$PG_DATA"
        chmod 700 "$PG_DATA"
        [[ $(id -u) -ne 0 ]] || chown "$PG_OS_USER" "$PG_DATA"
        as_pg_user "$bin/initdb" -D "$PG_DATA" -U postgres --auth-local=trust \
            --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >>"$PG_LOG" 2>&1 \
            || { tail_log "$PG_LOG"; die "postgres: initdb failed"; }
    elif [[ $(id -u) -eq 0 ]]; then
        chown -R "$PG_OS_USER" "$PG_DATA"
    fi
    log "postgres: starting on 127.0.0.1:$PG_PORT (data $PG_DATA, log $PG_LOG)"
    # Durability is pointless for throwaway test data; skip fsync for speed.
    as_pg_user "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -W -o \
        "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$PG_SOCK -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >/dev/null || { tail_log "$PG_LOG"; die "postgres: pg_ctl start failed"; }
    mark_started postgres
    wait_until "postgres on 127.0.0.1:$PG_PORT" "$PG_LOG" postgres_up
    postgres_provision "$bin" || { tail_log "$PG_LOG"; die "postgres: could not create role/databases"; }
    postgres_check_login "$bin" || die "postgres: role $PG_USER cannot log in"
    log "postgres: ready"
}

postgres_stop() {
    local bin; bin="$(pg_bindir)" || return 0
    pg_paths
    if [[ -f "$PG_DATA/postmaster.pid" ]]; then
        log "postgres: stopping"
        as_pg_user "$bin/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null \
            || log "postgres: pg_ctl stop reported a problem (see $PG_LOG)"
    else
        log "postgres: not running from $PG_DATA"
    fi
}

postgres_env() {
    echo "export FS_TEST_POSTGRES_URL=postgresql+psycopg://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/${PG_DATABASES[0]}"
}

# ---------------------------------------------------------------- redis
redis_bin() {
    local b
    b="$(command -v redis-server 2>/dev/null || true)"
    [[ -n "$b" ]] || { [[ -x /usr/bin/redis-server ]] && b=/usr/bin/redis-server; }
    [[ -n "$b" ]] && echo "$b"
}

redis_cli() {
    local b
    b="$(command -v redis-cli 2>/dev/null || true)"
    [[ -n "$b" ]] || b=/usr/bin/redis-cli
    "$b" "$@"
}

redis_install() {
    if redis_bin >/dev/null && { command -v redis-cli >/dev/null || [[ -x /usr/bin/redis-cli ]]; }; then
        log "redis: binaries present ($(redis_bin))"
    else
        apt_install redis-server redis-tools
        redis_bin >/dev/null || die "redis-server installed but not found on PATH"
    fi
}

redis_up() {
    [[ "$(redis_cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == "PONG" ]]
}

redis_start() {
    local bin; bin="$(redis_bin)" || die "redis: not installed (run: $0 install)"
    local dir="$STATE/redis" logf="$STATE/redis.log" pidf="$STATE/redis.pid"
    if redis_up; then
        log "redis: already answering on 127.0.0.1:$REDIS_PORT; leaving it running"
        return 0   # not started by this call
    fi
    mkdir -p "$dir"
    rm -f "$pidf"
    log "redis: starting on 127.0.0.1:$REDIS_PORT (log $logf)"
    "$bin" --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
        --daemonize yes --pidfile "$pidf" --logfile "$logf" --dir "$dir" \
        || { tail_log "$logf"; die "redis: redis-server failed to start"; }
    mark_started redis
    wait_until "redis on 127.0.0.1:$REDIS_PORT" "$logf" redis_up
    log "redis: ready"
}

redis_stop() {
    local pidf="$STATE/redis.pid" pid
    if [[ -f "$pidf" ]] && pid="$(cat "$pidf")" && kill -0 "$pid" 2>/dev/null; then
        log "redis: stopping (pid $pid)"
        kill -TERM "$pid"
        local deadline=$((SECONDS + 30))
        while kill -0 "$pid" 2>/dev/null; do
            if ((SECONDS >= deadline)); then
                log "redis: still alive after 30s, killing"; kill -KILL "$pid" 2>/dev/null || true; break
            fi
            sleep 0.2
        done
        rm -f "$pidf"
    else
        log "redis: not running from $pidf"
    fi
}

redis_env() {
    echo "export FS_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
    echo "export FS_REDIS_SERVER_BIN=$(redis_bin || echo /usr/bin/redis-server)"
}

# ---------------------------------------------------------------- redis_tls
# A second redis-server that speaks only TLS (Debian's redis-server has TLS built in), for lookups over
# rediss://. Its certificates are made by openssl into .ci/state/redis-tls (once; again when missing
# or within a day of expiry): a test CA (ca.crt) and a server certificate for 127.0.0.1 and localhost
# signed by it. Clients need no certificate (--tls-auth-clients no) but must trust ca.crt
# (FS_TEST_REDIS_TLS_CA; the URL takes it as ?ssl_ca_certs=). Tests that freeze or kill a TLS server
# start their own with the same files (FS_TEST_REDIS_TLS_CERT, FS_TEST_REDIS_TLS_KEY).
REDIS_TLS_PORT="${FS_REDIS_TLS_PORT:-56380}"
REDIS_TLS_DIR="$STATE/redis-tls"

redis_tls_install() {
    redis_install
    if ! command -v openssl >/dev/null; then apt_install openssl; fi
}

# The certificates exist and stay valid for another day.
redis_tls_certs_ok() {
    local f
    for f in ca.crt server.crt server.key; do [[ -s "$REDIS_TLS_DIR/$f" ]] || return 1; done
    openssl x509 -checkend 86400 -noout -in "$REDIS_TLS_DIR/server.crt" >/dev/null 2>&1
}

redis_tls_make_certs() {
    redis_tls_certs_ok && return 0
    mkdir -p "$REDIS_TLS_DIR"
    local tmp; tmp="$(mktemp -d "$REDIS_TLS_DIR/.certs.XXXXXX")"
    log "redis_tls: making a test CA and a server certificate in $REDIS_TLS_DIR"
    (
        cd "$tmp"
        openssl req -x509 -new -nodes -newkey rsa:2048 -sha256 -days 3650 -keyout ca.key -out ca.crt \
            -subj "/CN=featurestore test CA" -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" -addext "subjectKeyIdentifier=hash"
        openssl req -new -nodes -newkey rsa:2048 -sha256 -keyout server.key -out server.csr -subj "/CN=localhost"
        printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=critical,CA:FALSE" \
            "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" \
            "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid,issuer" >server.ext
        openssl x509 -req -sha256 -days 3650 -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
            -out server.crt -extfile server.ext
    ) >"$tmp/openssl.log" 2>&1 || { tail_log "$tmp/openssl.log"; rm -rf "$tmp"; die "redis_tls: openssl failed"; }
    chmod 600 "$tmp/ca.key" "$tmp/server.key"
    mv -f "$tmp"/ca.crt "$tmp"/ca.key "$tmp"/server.crt "$tmp"/server.key "$REDIS_TLS_DIR/"
    rm -rf "$tmp"
}

redis_tls_up() {
    [[ -s "$REDIS_TLS_DIR/ca.crt" ]] || return 1
    [[ "$(redis_cli --tls --cacert "$REDIS_TLS_DIR/ca.crt" -h 127.0.0.1 -p "$REDIS_TLS_PORT" ping 2>/dev/null)" == "PONG" ]]
}

# Something listens on the port (then it is not ours, if redis_tls_up said no).
redis_tls_port_taken() {
    (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_TLS_PORT") 2>/dev/null
}

redis_tls_start() {
    local bin; bin="$(redis_bin)" || die "redis_tls: redis-server not installed (run: $0 install redis_tls)"
    local logf="$STATE/redis-tls.log" pidf="$STATE/redis-tls.pid"
    if redis_tls_up; then
        log "redis_tls: already answering on 127.0.0.1:$REDIS_TLS_PORT; leaving it running"
        return 0   # not started by this call
    fi
    if redis_tls_port_taken; then
        die "redis_tls: port $REDIS_TLS_PORT is taken by a server that does not answer TLS with $REDIS_TLS_DIR/ca.crt (another checkout's?); stop it or set FS_REDIS_TLS_PORT"
    fi
    redis_tls_make_certs
    mkdir -p "$REDIS_TLS_DIR/data"
    rm -f "$pidf"
    log "redis_tls: starting on 127.0.0.1:$REDIS_TLS_PORT, TLS only (log $logf)"
    "$bin" --bind 127.0.0.1 --port 0 --tls-port "$REDIS_TLS_PORT" \
        --tls-cert-file "$REDIS_TLS_DIR/server.crt" --tls-key-file "$REDIS_TLS_DIR/server.key" \
        --tls-ca-cert-file "$REDIS_TLS_DIR/ca.crt" --tls-auth-clients no --save '' --appendonly no \
        --daemonize yes --pidfile "$pidf" --logfile "$logf" --dir "$REDIS_TLS_DIR/data" \
        || { tail_log "$logf"; die "redis_tls: redis-server failed to start"; }
    mark_started redis_tls
    wait_until "redis_tls on 127.0.0.1:$REDIS_TLS_PORT" "$logf" redis_tls_up
    log "redis_tls: ready"
}

redis_tls_stop() {
    local pid
    if pid="$(pid_of "$STATE/redis-tls.pid" redis-server)"; then
        stop_process redis_tls "$pid" 30
        rm -f "$STATE/redis-tls.pid"
    else
        log "redis_tls: not running from $STATE/redis-tls.pid"
    fi
}

redis_tls_env() {
    echo "export FS_TEST_REDIS_TLS_URL=rediss://127.0.0.1:$REDIS_TLS_PORT/0"
    echo "export FS_TEST_REDIS_TLS_CA=$REDIS_TLS_DIR/ca.crt"
    echo "export FS_TEST_REDIS_TLS_CERT=$REDIS_TLS_DIR/server.crt"
    echo "export FS_TEST_REDIS_TLS_KEY=$REDIS_TLS_DIR/server.key"
}

# ---------------------------------------------------------------- redis_cluster
# A real Redis Cluster on loopback: six redis-server processes in cluster mode (three masters, three
# replicas) on ports 46400..46405, joined by `redis-cli --cluster create --cluster-replicas 1`. The
# cluster bus of each node listens on port+10000 (56400..56405), so the ports stay below 55536. Each
# node keeps nodes.conf, redis.log and redis.pid in .ci/state/redis-cluster/<port>. The data is
# throwaway, like the other services': no RDB, no AOF, and a cluster that is not whole (a node down,
# slots uncovered, a stale nodes.conf from an earlier machine state) is stopped, wiped and created
# afresh. The node timeout is short (2 s) so failover happens within seconds. Tests that kill nodes or
# reshard start their own throwaway clusters (tests/cluster_helpers.py), never this one.
REDIS_CLUSTER_PORTS=(46400 46401 46402 46403 46404 46405)
REDIS_CLUSTER_DIR="$STATE/redis-cluster"
REDIS_CLUSTER_NODE_TIMEOUT_MS=2000

redis_cluster_install() { redis_install; }

redis_cluster_pidf() { echo "$REDIS_CLUSTER_DIR/$1/redis.pid"; }

# The pid of our node on this port (from its pid file, if the process is still a redis-server).
redis_cluster_pid() { pid_of "$(redis_cluster_pidf "$1")" redis-server; }

redis_cluster_cli() { local port="$1"; shift; redis_cli -h 127.0.0.1 -p "$port" "$@" 2>/dev/null; }

redis_cluster_ping() { [[ "$(redis_cluster_cli "$1" ping)" == "PONG" ]]; }

# A field of CLUSTER INFO on one node.
redis_cluster_info() {
    redis_cluster_cli "$1" cluster info | tr -d '\r' | awk -F: -v k="$2" '$1 == k {print $2}'
}

# Whole and healthy as every node sees it: all six answer; each says cluster_state:ok with all 16384
# slots assigned, six known nodes and three shards; each gives the same CLUSTER SLOTS; the nodes are
# exactly our six ports, three masters each with one replica, none flagged failing, every replica's
# link to its master up.
redis_cluster_up() {
    local port first="${REDIS_CLUSTER_PORTS[0]}" slots0 slots nodes
    for port in "${REDIS_CLUSTER_PORTS[@]}"; do redis_cluster_ping "$port" || return 1; done
    slots0="$(redis_cluster_cli "$first" cluster slots)" || return 1
    [[ -n "$slots0" ]] || return 1
    for port in "${REDIS_CLUSTER_PORTS[@]}"; do
        [[ "$(redis_cluster_info "$port" cluster_state)" == "ok" ]] || return 1
        [[ "$(redis_cluster_info "$port" cluster_slots_assigned)" == "16384" ]] || return 1
        [[ "$(redis_cluster_info "$port" cluster_known_nodes)" == "6" ]] || return 1
        [[ "$(redis_cluster_info "$port" cluster_size)" == "3" ]] || return 1
        slots="$(redis_cluster_cli "$port" cluster slots)" || return 1
        [[ "$slots" == "$slots0" ]] || return 1
        if [[ "$(redis_cluster_cli "$port" role | head -n 1)" == "slave" ]]; then
            redis_cluster_cli "$port" info replication | tr -d '\r' | grep -qx 'master_link_status:up' || return 1
        fi
    done
    nodes="$(redis_cluster_cli "$first" cluster nodes)" || return 1
    awk -v want="${REDIS_CLUSTER_PORTS[*]}" '
        { addr = $2; sub(/@.*/, "", addr); sub(/^.*:/, "", addr); port[$1] = addr; flags[$1] = $3; master[$1] = $4 }
        $3 ~ /fail|handshake|noaddr/ { bad = 1 }
        END {
            n = split(want, w, " "); for (i = 1; i <= n; i++) wanted[w[i]] = 1
            for (id in port) { if (!(port[id] in wanted)) bad = 1; seen++ }
            if (seen != n) bad = 1
            for (id in port) if (flags[id] ~ /master/) { masters++; replicas[id] = 0 }
            for (id in port) if (flags[id] ~ /slave/) { if (!(master[id] in replicas)) bad = 1; else replicas[master[id]]++ }
            if (masters != 3) bad = 1
            for (id in replicas) if (replicas[id] != 1) bad = 1
            exit bad
        }' <<<"$nodes"
}

# redis_cluster_stop_pids <port:pid>...: SIGTERM to all at once (each takes a second or two to go),
# then wait; SIGKILL whatever is left after 30 s.
redis_cluster_stop_pids() {
    local entry pid deadline=$((SECONDS + 30)) alive
    for entry in "$@"; do
        log "redis_cluster: stopping node ${entry%%:*} (pid ${entry##*:})"
        kill -TERM "${entry##*:}" 2>/dev/null || true
    done
    while :; do
        alive=()
        for entry in "$@"; do
            pid="${entry##*:}"
            if kill -0 "$pid" 2>/dev/null; then alive+=("$pid"); fi
        done
        ((${#alive[@]})) || break
        if ((SECONDS >= deadline)); then
            log "redis_cluster: pids ${alive[*]} still alive after 30s, killing"
            kill -KILL "${alive[@]}" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
}

redis_cluster_wipe() {
    local port
    for port in "${REDIS_CLUSTER_PORTS[@]}"; do rm -rf "${REDIS_CLUSTER_DIR:?}/$port"; done
}

redis_cluster_start() {
    local bin; bin="$(redis_bin)" || die "redis_cluster: redis-server not installed (run: $0 install redis_cluster)"
    local first="${REDIS_CLUSTER_PORTS[0]}" last="${REDIS_CLUSTER_PORTS[-1]}" port pid ours=()
    if redis_cluster_up; then
        log "redis_cluster: already up on 127.0.0.1:$first..$last; leaving it running"
        return 0   # not started by this call
    fi
    # Not whole. Ours (a pid file naming a live redis-server) are stopped and wiped; a port answered by
    # anything else is not ours to stop.
    for port in "${REDIS_CLUSTER_PORTS[@]}"; do
        if pid="$(redis_cluster_pid "$port")"; then
            ours+=("$port:$pid")
        elif (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null \
                || (exec 3<>"/dev/tcp/127.0.0.1/$((port + 10000))") 2>/dev/null; then
            die "redis_cluster: port $port (or its bus port $((port + 10000))) is taken by a process this script did not start from $REDIS_CLUSTER_DIR/$port; stop it"
        fi
    done
    if ((${#ours[@]})); then
        log "redis_cluster: the nodes found running (${ours[*]%%:*}) do not form a whole cluster; stopping them and starting afresh"
        redis_cluster_stop_pids "${ours[@]}"
    fi
    redis_cluster_wipe
    log "redis_cluster: starting six nodes on 127.0.0.1:$first..$last (bus +10000; state $REDIS_CLUSTER_DIR)"
    local t0=$SECONDS dir started=0
    for port in "${REDIS_CLUSTER_PORTS[@]}"; do
        dir="$REDIS_CLUSTER_DIR/$port"
        mkdir -p "$dir"
        if ! "$bin" --bind 127.0.0.1 --port "$port" --cluster-enabled yes \
                --cluster-config-file "$dir/nodes.conf" \
                --cluster-node-timeout "$REDIS_CLUSTER_NODE_TIMEOUT_MS" \
                --save '' --appendonly no --repl-diskless-sync yes --repl-diskless-sync-delay 0 \
                --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --dir "$dir"; then
            tail_log "$dir/redis.log"
            die "redis_cluster: redis-server on port $port failed to start"
        fi
        if ((started == 0)); then mark_started redis_cluster; started=1; fi
    done
    for port in "${REDIS_CLUSTER_PORTS[@]}"; do
        wait_until "redis_cluster node on 127.0.0.1:$port" "$REDIS_CLUSTER_DIR/$port/redis.log" \
            redis_cluster_ping "$port"
    done
    local addrs=() clog="$REDIS_CLUSTER_DIR/create.log"
    for port in "${REDIS_CLUSTER_PORTS[@]}"; do addrs+=("127.0.0.1:$port"); done
    log "redis_cluster: joining them (redis-cli --cluster create --cluster-replicas 1; log $clog)"
    redis_cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes </dev/null >"$clog" 2>&1 \
        || { tail_log "$clog"; die "redis_cluster: redis-cli --cluster create failed"; }
    wait_until "redis_cluster (cluster_state:ok on all six nodes)" "$REDIS_CLUSTER_DIR/$first/redis.log" \
        redis_cluster_up
    log "redis_cluster: ready ($((SECONDS - t0))s)"
}

redis_cluster_stop() {
    local port pid ours=()
    for port in "${REDIS_CLUSTER_PORTS[@]}"; do
        if pid="$(redis_cluster_pid "$port")"; then ours+=("$port:$pid"); fi
    done
    if ((${#ours[@]} == 0)); then
        log "redis_cluster: no node running from $REDIS_CLUSTER_DIR/<port>/redis.pid"
        return 0
    fi
    redis_cluster_stop_pids "${ours[@]}"
    for port in "${ours[@]}"; do rm -f "$(redis_cluster_pidf "${port%%:*}")"; done
}

redis_cluster_env() {
    echo "export FS_TEST_REDIS_CLUSTER_URL=redis://127.0.0.1:${REDIS_CLUSTER_PORTS[0]}"
}

# ---------------------------------------------------------------- JVM jars (Maven Central)
# fetch_jars PROFILE: resolve one profile of .ci/jvm/pom.xml into .ci/cache/jars/PROFILE. Skipped when
# the folder's .stamp holds the pom's sha256 (featurestore/jvm_jars.py writes the same stamp).
# Fetched into a temporary folder and moved into place, so an interrupted fetch never looks complete.
pom_hash() { sha256sum "$JVM_POM" | cut -c1-64; }

jars_ready() {
    local dir="$JARS_CACHE/$1"
    [[ -f "$dir/.stamp" && "$(cat "$dir/.stamp")" == "$(pom_hash)" ]]
}

fetch_jars() {
    local profile="$1" dir="$JARS_CACHE/$1"
    if jars_ready "$profile"; then
        log "jars: $profile cached in $dir"
        return 0
    fi
    command -v mvn >/dev/null || die "jars: mvn not found (run: $0 install kafka)"
    mkdir -p "$JARS_CACHE"
    local tmp; tmp="$(mktemp -d "$JARS_CACHE/.$profile.XXXXXX")"
    local mlog="$JARS_CACHE/$profile.mvn.log" t0=$SECONDS
    log "jars: fetching profile $profile of $JVM_POM from Maven Central (log $mlog)"
    if ! mvn -q -B -f "$JVM_POM" -P "$profile" dependency:copy-dependencies \
            -DoutputDirectory="$tmp" >"$mlog" 2>&1; then
        rm -rf "$tmp"
        tail_log "$mlog"
        die "jars: mvn could not fetch profile $profile"
    fi
    compgen -G "$tmp/*.jar" >/dev/null || { rm -rf "$tmp"; die "jars: profile $profile gave no jars"; }
    pom_hash >"$tmp/.stamp"
    rm -rf "$dir"
    mv "$tmp" "$dir"
    log "jars: $profile ready in $dir ($(find "$dir" -name '*.jar' | wc -l) jars, $((SECONDS - t0))s)"
}

# ---------------------------------------------------------------- kafka
# A single-node KRaft broker (broker and controller in one JVM) on loopback. State lives in
# .ci/state/kafka: server.properties (rewritten on every start), data/ (formatted once with a random
# cluster id), kafka.log, kafka.pid.
KAFKA_DIR="$STATE/kafka"
KAFKA_PIDF="$KAFKA_DIR/kafka.pid"
KAFKA_LOG="$KAFKA_DIR/kafka.log"

kafka_java() {
    if [[ -n "${JAVA_HOME:-}" && -x "${JAVA_HOME}/bin/java" ]]; then
        echo "$JAVA_HOME/bin/java"
    else
        command -v java
    fi
}

kafka_install() {
    local pkgs=()
    kafka_java >/dev/null || pkgs+=(openjdk-17-jre-headless)
    command -v mvn >/dev/null || pkgs+=(maven)
    command -v python3 >/dev/null || pkgs+=(python3)
    if ((${#pkgs[@]})); then apt_install "${pkgs[@]}"; fi
    log "kafka: $("$(kafka_java)" -version 2>&1 | head -n 1)"
    fetch_jars kafka-broker
}

# Answers when a Kafka broker on the port lists itself in a Metadata response (so it is unfenced and
# serving, not just listening). Standard-library Python: works before any venv exists.
kafka_up() {
    python3 - "$KAFKA_PORT" 2>/dev/null <<'PY'
import socket, struct, sys

port = int(sys.argv[1])
client = b"fs-ci"
# Metadata v4 (Kafka 4 serves v4 and up). Header v1: api_key, api_version, correlation id, client id.
# Body: topics = empty array (brokers only), allow_auto_topic_creation = false.
body = struct.pack(">hhih", 3, 4, 7, len(client)) + client + struct.pack(">ib", 0, 0)
with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
    s.settimeout(5)
    s.sendall(struct.pack(">i", len(body)) + body)

    def read(n):
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                sys.exit(1)
            buf += chunk
        return buf

    (size,) = struct.unpack(">i", read(4))
    resp = read(size)
# Response header v0 (correlation id), then throttle_time_ms and the length of the brokers array.
corr, _throttle, nbrokers = struct.unpack(">iii", resp[:12])
sys.exit(0 if corr == 7 and nbrokers >= 1 else 1)
PY
}

kafka_write_properties() {
    cat >"$KAFKA_DIR/server.properties" <<PROPS
# Written by .ci/services.sh on every start; edits are lost.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DIR/data
num.partitions=1
default.replication.factor=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
log.retention.hours=24
PROPS
}

# pid_of <pidfile> <command pattern>: the pid in the file, if that process lives and its command line
# matches the pattern (so a reused pid is never taken for our server).
pid_of() {
    local pidfile="$1" pattern="$2" pid
    [[ -f "$pidfile" ]] || return 1
    pid="$(cat "$pidfile")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$pattern" || return 1
    echo "$pid"
}

# The broker's pid from the pid file, if that process is still our kafka.Kafka.
kafka_pid() { pid_of "$KAFKA_PIDF" 'kafka\.Kafka'; }

# For wait_until: succeed when the broker answers, and also when our process died (checked after).
kafka_up_or_dead() {
    kafka_up || ! kafka_pid >/dev/null
}

kafka_start() {
    local java; java="$(kafka_java)" || die "kafka: no java (run: $0 install kafka)"
    jars_ready kafka-broker || die "kafka: broker jars missing (run: $0 install kafka)"
    local cp="$JARS_CACHE/kafka-broker/*"
    if kafka_up; then
        log "kafka: already answering on 127.0.0.1:$KAFKA_PORT; leaving it running"
        return 0   # not started by this call
    fi
    local pid
    if pid="$(kafka_pid)"; then
        # Our broker from an earlier start is alive but not answering yet: wait, do not start twice.
        log "kafka: broker from an earlier start (pid $pid) is still coming up; waiting"
        wait_until "kafka on 127.0.0.1:$KAFKA_PORT" "$KAFKA_LOG" kafka_up
        return 0
    fi
    mkdir -p "$KAFKA_DIR"
    kafka_write_properties
    local logopts=(-Dorg.slf4j.simpleLogger.showDateTime=true
                   "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSS"
                   -Dorg.slf4j.simpleLogger.log.org.apache.kafka.common.config=warn)
    if [[ ! -f "$KAFKA_DIR/data/meta.properties" ]]; then
        rm -rf "$KAFKA_DIR/data"
        local cid
        cid="$("$java" -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)"
        [[ "$cid" =~ ^[A-Za-z0-9_-]{22}$ ]] || die "kafka: could not make a cluster id (got '$cid')"
        log "kafka: formatting KRaft storage in $KAFKA_DIR/data (cluster id $cid)"
        "$java" -Xmx256m "${logopts[@]}" -cp "$cp" kafka.tools.StorageTool format -t "$cid" \
            -c "$KAFKA_DIR/server.properties" --standalone >"$KAFKA_DIR/format.log" 2>&1 \
            || { tail_log "$KAFKA_DIR/format.log"; die "kafka: storage format failed"; }
    fi
    log "kafka: starting on 127.0.0.1:$KAFKA_PORT (controller $KAFKA_CONTROLLER_PORT, log $KAFKA_LOG)"
    # Own session (setsid), so a Ctrl-C at the terminal reaches `stop` rather than the broker; no
    # inherited stdin/stdout/stderr, so a pipe (make test | tee) does not wait for the broker to exit.
    # shellcheck disable=SC2086
    setsid "$java" ${FS_KAFKA_HEAP_OPTS:--Xms128m -Xmx512m} -XX:+UseSerialGC -Djava.awt.headless=true \
        "${logopts[@]}" ${FS_KAFKA_JAVA_OPTS:-} -cp "$cp" kafka.Kafka "$KAFKA_DIR/server.properties" \
        </dev/null >>"$KAFKA_LOG" 2>&1 &
    echo $! >"$KAFKA_PIDF"
    mark_started kafka
    local t0=$SECONDS
    wait_until "kafka on 127.0.0.1:$KAFKA_PORT" "$KAFKA_LOG" kafka_up_or_dead
    kafka_pid >/dev/null || { tail_log "$KAFKA_LOG"; die "kafka: the broker exited during startup"; }
    log "kafka: ready ($((SECONDS - t0))s)"
}

# stop_process <name> <pid> <seconds>: SIGTERM, then SIGKILL once <seconds> have passed.
stop_process() {
    local name="$1" pid="$2" seconds="$3"
    log "$name: stopping (pid $pid)"
    kill -TERM "$pid"
    local deadline=$((SECONDS + seconds))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "$name: still alive after ${seconds}s, killing"; kill -KILL "$pid" 2>/dev/null || true; break
        fi
        sleep 0.2
    done
}

kafka_stop() {
    local pid
    if pid="$(kafka_pid)"; then
        stop_process kafka "$pid" 45
        rm -f "$KAFKA_PIDF"
    else
        log "kafka: not running from $KAFKA_PIDF"
    fi
}

kafka_env() {
    echo "export FS_TEST_KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT"
}

# ---------------------------------------------------------------- s3
# MinIO (AGPL-3.0; run unmodified, as a separate process, for tests only): an S3 server whose
# conditional PUT (If-None-Match: *) is atomic, so of several overlapping PUTs of one new key exactly
# one succeeds and the others get 412 Precondition Failed. Delta Lake commits on S3 rely on that
# (each commit is a put-if-absent of the next _delta_log/N.json); tests/test_s3_service.py checks it.
# MinIO's community edition ships as source only and its repository is archived, so it is built with
# `go install` from the Go module proxy at a pinned module version: the pseudo-version of the newest
# commit the proxy serves (`@latest` on 2026-12-06, a commit of 2026-02-12, after the last RELEASE.* tag;
# the proxy does not resolve those tags, which are not semantic versions).
# Binary in .ci/cache/minio/bin; Go's module and build caches stay where Go keeps them (~/go/pkg/mod,
# ~/.cache/go-build), so that a fresh clone on a machine that built it once only relinks it. State in
# .ci/state/s3: data/ (a single drive), s3.pid; log in .ci/state/s3.log. Region us-east-1: bucket and
# object requests signed for another region are refused (400 AuthorizationHeaderMalformed). Port
# 59100, not the 59000 of the s3s-fs server used before, so an s3s-fs still running from an older
# checkout is never taken for it.
S3_MODULE=github.com/minio/minio
S3_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
S3_ACCESS_KEY=fstest
S3_SECRET_KEY=fstest-secret
S3_REGION=us-east-1
S3_CACHE="$ROOT/.ci/cache/minio"
S3_BIN="$S3_CACHE/bin/minio"
S3_DIR="$STATE/s3"
S3_DATA="$S3_DIR/data"
S3_PIDF="$S3_DIR/s3.pid"
S3_LOG="$STATE/s3.log"

s3_go() {
    if command -v go >/dev/null; then
        command -v go
    elif [[ -x /usr/local/go/bin/go ]]; then
        echo /usr/local/go/bin/go
    else
        return 1
    fi
}

# The binary was built from $S3_MODULE at $S3_VERSION, as Go recorded in it.
s3_installed() {
    local go built; go="$(s3_go)" || return 1
    [[ -x "$S3_BIN" ]] || return 1
    built="$("$go" version -m "$S3_BIN" 2>/dev/null \
        | awk -v m="$S3_MODULE" '$1 == "mod" && $2 == m {print $3}')"
    [[ "$built" == "$S3_VERSION" ]]
}

s3_install() {
    if ! command -v curl >/dev/null; then apt_install curl ca-certificates; fi
    if s3_installed; then
        log "s3: MinIO $S3_VERSION present ($S3_BIN)"
        return 0
    fi
    local go; go="$(s3_go)" \
        || die "s3: go not found; MinIO $S3_VERSION is built from source and needs Go >= 1.24"
    mkdir -p "$S3_CACHE/bin"
    local blog="$S3_CACHE/go-install.log" t0=$SECONDS
    log "s3: building MinIO $S3_VERSION with go install into $S3_CACHE" \
        "(a first build takes ~9 min on 2 cores; log $blog)"
    # CGO off as MinIO's own release builds; nice, since the build takes both cores for minutes.
    if ! GOBIN="$S3_CACHE/bin" CGO_ENABLED=0 GOFLAGS=-mod=mod nice -n 19 \
            "$go" install -trimpath "$S3_MODULE@$S3_VERSION" >"$blog" 2>&1; then
        tail_log "$blog"
        die "s3: go install $S3_MODULE@$S3_VERSION failed"
    fi
    s3_installed || die "s3: $S3_BIN was not built from $S3_MODULE $S3_VERSION after go install"
    log "s3: MinIO $S3_VERSION built ($((SECONDS - t0))s)"
}

# ListBuckets (GET /) signed with the test credentials (SigV4; curl >= 7.75 signs, the payload hash
# header is one S3 servers require); prints the response headers and body, fails only when nothing
# answered.
s3_list_buckets() {
    curl -sS -i --max-time 5 --aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" \
        -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "http://127.0.0.1:$S3_PORT/" 2>/dev/null
}

# Answers like an S3 server: a bucket list, or an S3 XML error (e.g. another server's credentials).
s3_up() {
    s3_list_buckets | grep -q '<ListAllMyBucketsResult\|<Error>'
}

# The server on the port is MinIO and takes the test credentials (checked for any server on the
# port, ours or one found running): the tests are told MinIO answers, so nothing else may.
s3_check_login() {
    local answer server; answer="$(s3_list_buckets)" || return 1
    if ! grep -qi '^Server: MinIO' <<<"$answer"; then
        server="$(grep -i '^Server:' <<<"$answer" | tr -d '\r' || true)"
        die "s3: the server on port $S3_PORT is not MinIO (${server:-no Server header}); stop it"
    fi
    grep -q '<ListAllMyBucketsResult' <<<"$answer"
}

# The server's pid from the pid file, if that process is still our MinIO.
s3_pid() { pid_of "$S3_PIDF" 'minio server'; }

s3_up_or_dead() {
    s3_up || ! s3_pid >/dev/null
}

s3_start() {
    s3_installed || die "s3: MinIO $S3_VERSION not installed (run: $0 install s3)"
    if s3_up; then
        log "s3: already answering on 127.0.0.1:$S3_PORT; leaving it running"
        s3_check_login || die "s3: the server on port $S3_PORT answers but refuses access key $S3_ACCESS_KEY"
        return 0   # not started by this call
    fi
    local pid
    if pid="$(s3_pid)"; then
        log "s3: server from an earlier start (pid $pid) is still coming up; waiting"
        wait_until "s3 on 127.0.0.1:$S3_PORT" "$S3_LOG" s3_up
        return 0
    fi
    # Throwaway test data, like Redis's: each start begins empty.
    rm -rf "$S3_DATA"
    mkdir -p "$S3_DATA"
    log "s3: starting MinIO $S3_VERSION on 127.0.0.1:$S3_PORT (data $S3_DATA, log $S3_LOG)"
    # Own session and no inherited stdio, as for Kafka. No web console (MINIO_BROWSER=off) and no
    # update checks; --anonymous keeps the root user out of the log.
    MINIO_ROOT_USER="$S3_ACCESS_KEY" MINIO_ROOT_PASSWORD="$S3_SECRET_KEY" MINIO_SITE_REGION="$S3_REGION" \
        MINIO_BROWSER=off MINIO_UPDATE=off \
        setsid "$S3_BIN" server --anonymous --address "127.0.0.1:$S3_PORT" "$S3_DATA" \
        </dev/null >>"$S3_LOG" 2>&1 &
    echo $! >"$S3_PIDF"
    mark_started s3
    local t0=$SECONDS
    wait_until "s3 on 127.0.0.1:$S3_PORT" "$S3_LOG" s3_up_or_dead
    s3_pid >/dev/null || { tail_log "$S3_LOG"; die "s3: the server exited during startup"; }
    s3_check_login || { tail_log "$S3_LOG"; die "s3: the server refuses the test credentials"; }
    log "s3: ready ($((SECONDS - t0))s)"
}

s3_stop() {
    local pid
    if pid="$(s3_pid)"; then
        stop_process s3 "$pid" 30
        rm -f "$S3_PIDF"
    else
        log "s3: not running from $S3_PIDF"
    fi
}

s3_env() {
    echo "export FS_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT"
    echo "export FS_TEST_S3_ACCESS_KEY=$S3_ACCESS_KEY"
    echo "export FS_TEST_S3_SECRET_KEY=$S3_SECRET_KEY"
    echo "export FS_TEST_S3_REGION=$S3_REGION"
    # Which implementation answers (tests/test_s3_service.py names it in its messages).
    echo "export FS_TEST_S3_SERVER=minio/$S3_VERSION"
}

# ---------------------------------------------------------------- browser
# Debian's chromium with its matching chromedriver (the same source package, so their versions agree),
# for tests/test_quality_report.py and tests/test_catalog_ui.py, which open the report and the catalog
# in headless Chromium through Selenium. No
# browser is downloaded from anywhere else. Nothing runs between tests: start and stop only check.
browser_bins() { command -v chromium >/dev/null && command -v chromedriver >/dev/null; }

browser_install() {
    if browser_bins; then
        log "browser: chromium and chromedriver present"
    else
        # DejaVu: the report's text needs a font; a minimal image may have none.
        apt_install chromium chromium-driver fonts-dejavu-core
        browser_bins || die "browser: chromium or chromedriver not on PATH after apt-get install"
    fi
}

browser_up() { browser_bins; }

browser_start() {
    browser_bins || die "browser: not installed (run: $0 install browser)"
    log "browser: chromium at $(command -v chromium), chromedriver at $(command -v chromedriver)"
}

browser_stop() { :; }

browser_env() {
    echo "export FS_TEST_CHROMIUM=$(command -v chromium || echo /usr/bin/chromium)"
    echo "export FS_TEST_CHROMEDRIVER=$(command -v chromedriver || echo /usr/bin/chromedriver)"
}

# ---------------------------------------------------------------- dispatch
RECORD=""
# Called by <svc>_start right after it launched a server (never when it found one answering), before
# waiting for it, so a server that comes up badly is still stopped by `stop`.
mark_started() {
    echo "$1" >>"$STARTED_LIST"
    [[ -z "$RECORD" ]] || echo "$1" >>"$RECORD"
}

check_service() {
    local s
    for s in "${SERVICES[@]}"; do [[ "$s" == "$1" ]] && return 0; done
    die "unknown service '$1' (known: ${SERVICES[*]})"
}

cmd_install() {
    local s
    for s in "$@"; do "${s}_install"; done
}

cmd_start() {
    local record="" s names=()
    while (($#)); do
        case "$1" in
            --record) record="$2"; shift 2 ;;
            *) names+=("$1"); shift ;;
        esac
    done
    ((${#names[@]})) || names=("${SERVICES[@]}")
    for s in "${names[@]}"; do check_service "$s"; done
    cmd_install "${names[@]}"
    mkdir -p "$STATE"
    RECORD="$record"
    for s in "${names[@]}"; do "${s}_start"; done
}

cmd_stop() {
    local from="$STARTED_LIST" s names=() listed=()
    while (($#)); do
        case "$1" in
            --from) from="$2"; shift 2 ;;
            *) names+=("$1"); shift ;;
        esac
    done
    if [[ -f "$from" ]]; then mapfile -t listed < <(sort -u "$from"); fi
    if ((${#listed[@]} == 0)); then
        log "nothing to stop (no services recorded in $from)"
        if [[ "$from" != "$STARTED_LIST" ]]; then rm -f "$from"; fi
        return 0
    fi
    # Stop in reverse of the declared order (so a later Kafka stops before what it might use).
    local i
    for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
        s="${SERVICES[i]}"
        printf '%s\n' "${listed[@]}" | grep -qx "$s" || continue
        if ((${#names[@]})) && ! printf '%s\n' "${names[@]}" | grep -qx "$s"; then continue; fi
        "${s}_stop"
        # Forget it in the checkout-wide list too.
        if [[ -f "$STARTED_LIST" ]]; then
            grep -vx "$s" "$STARTED_LIST" >"$STARTED_LIST.tmp" || true
            mv "$STARTED_LIST.tmp" "$STARTED_LIST"
        fi
    done
    if [[ "$from" != "$STARTED_LIST" ]]; then rm -f "$from"; fi
}

cmd_env() {
    local s
    for s in "${SERVICES[@]}"; do "${s}_env"; done
}

cmd_status() {
    local s rc=0
    for s in "${SERVICES[@]}"; do
        if "${s}_up"; then echo "$s: up"; else echo "$s: down"; rc=1; fi
    done
    return $rc
}

main() {
    local cmd="${1:-}"
    (($#)) && shift
    case "$cmd" in
        install)
            local names=("$@"); ((${#names[@]})) || names=("${SERVICES[@]}")
            local s; for s in "${names[@]}"; do check_service "$s"; done
            cmd_install "${names[@]}" ;;
        start) cmd_start "$@" ;;
        stop) cmd_stop "$@" ;;
        env) cmd_env ;;
        status) cmd_status ;;
        jars)
            (($#)) || die "usage: $0 jars PROFILE... (profiles of $JVM_POM: kafka-broker, flink-kafka, spark-delta)"
            local p; for p in "$@"; do fetch_jars "$p"; done ;;
        *) echo "usage: $0 {install|start|stop|env|status|jars} [options] [service...]" >&2; exit 2 ;;
    esac
}

main "$@"
