#!/usr/bin/env bash
# Brings up, or checks, what the connector needs: PostgreSQL on 127.0.0.1:5432 and RabbitMQ
# on 127.0.0.1:5672. Starts them when they are installed but stopped; runs them in containers
# (deploy/compose.yaml) when they are not installed and a Docker engine answers; installs them
# from Debian's packages when they are missing and this runs as root on Debian; otherwise says
# exactly what is missing and fails.
#
# Usage: scripts/services.sh [check]   (check: only report, change nothing)
set -uo pipefail

mode=${1:-up}
PGHOST=${PGHOST:-127.0.0.1}
PGPORT=${PGPORT:-5432}
AMQP_PORT=${AMQP_PORT:-5672}

say() { printf 'services: %s\n' "$*" >&2; }
fail() { say "$*"; exit 1; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_for() { # what host port seconds
    local i
    for ((i = 0; i < $4 * 10; i++)); do
        port_open "$2" "$3" && return 0
        sleep 0.1
    done
    return 1
}

# A Docker engine that answers, with the compose plugin: `docker` alone may be only a client.
docker_answers() {
    command -v docker >/dev/null && docker info >/dev/null 2>&1 && docker compose version >/dev/null 2>&1
}

compose_up() { # service
    say "starting $1 in a container (deploy/compose.yaml)"
    docker compose -f "$(dirname "$0")/../deploy/compose.yaml" up -d --wait "$1" ||
        fail "could not start $1 with docker compose"
}

can_install() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }

apt_install() {
    "$(dirname "$0")/debian-install.sh" "$@" || fail "could not install $*"
}

postgres_up() {
    if port_open "$PGHOST" "$PGPORT"; then
        return 0
    fi
    [ "$mode" = check ] && fail "PostgreSQL is not listening on $PGHOST:$PGPORT"
    local fresh=0
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1 && docker_answers; then
        compose_up postgres
        return 0
    fi
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
        can_install || fail "PostgreSQL is not installed; install the Debian package postgresql (as root: apt-get install postgresql)"
        apt_install postgresql
        fresh=1
    fi
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    if [ "$fresh" = 1 ]; then
        # A development server: trust local TCP connections, as the default DATABASE_URL expects.
        local hba="/etc/postgresql/$version/main/pg_hba.conf"
        sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
    fi
    say "starting PostgreSQL $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null ||
        pg_ctlcluster "$version" main start ||
        fail "could not start PostgreSQL $version (see /var/log/postgresql/)"
    wait_for PostgreSQL "$PGHOST" "$PGPORT" 30 || fail "PostgreSQL did not open $PGHOST:$PGPORT"
}

rabbitmq_up() {
    if port_open 127.0.0.1 "$AMQP_PORT"; then
        return 0
    fi
    [ "$mode" = check ] && fail "RabbitMQ is not listening on 127.0.0.1:$AMQP_PORT"
    if ! command -v rabbitmq-server >/dev/null && docker_answers; then
        compose_up rabbitmq
        return 0
    fi
    if ! command -v rabbitmq-server >/dev/null; then
        can_install || fail "RabbitMQ is not installed; install the Debian package rabbitmq-server (as root: apt-get install rabbitmq-server)"
        apt_install rabbitmq-server
    fi
    say "starting RabbitMQ"
    rabbitmq-server -detached >/dev/null 2>&1 || true
    wait_for RabbitMQ 127.0.0.1 "$AMQP_PORT" 90 || fail "RabbitMQ did not open 127.0.0.1:$AMQP_PORT (see /var/log/rabbitmq/)"
}

postgres_up
rabbitmq_up
say "PostgreSQL on $PGHOST:$PGPORT and RabbitMQ on 127.0.0.1:$AMQP_PORT are up"
