#!/bin/sh
# STAND-IN for a container's own pg_dump (the busybox test image has no PostgreSQL): copied to /bin/pg_dump in
# a container of the docker_daemon fixture that mounts the host's / read-only at /host. It runs the HOST's
# real pg_dump inside that root with the environment the plan's script set up in the container (PGUSER,
# PGPASSWORD), against the machine's real PostgreSQL through its Unix socket — so the archive is a real
# pg_dump archive made via `docker exec`, restorable with pg_restore. Written for tests/test_sources_docker.py.
echo "stand-in pg_dump: PGUSER=${PGUSER:-unset} PGPASSWORD is ${PGPASSWORD:+set}" >&2
exec chroot /host /usr/bin/pg_dump "$@"
