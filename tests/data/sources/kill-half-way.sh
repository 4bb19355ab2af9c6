#!/bin/sh
# STAND-IN (test double, not a real client): installed under the name of a real dump program (pg_dump,
# mariadb-dump …) first on an sshd test host's PATH. It runs the REAL program (@REAL@) with the same
# arguments, lets the first @BYTES@ bytes of its output through, then kills it with SIGKILL — a dump killed
# half-way, as the OOM killer or an operator would. Written for tests/test_sources_*.py; nothing recorded.
d=$(mktemp -d) || exit 70
mkfifo "$d/out" || exit 70
"@REAL@" "$@" > "$d/out" &
pid=$!
exec 3< "$d/out"   # the read end stays open, so the dump blocks (no EPIPE) until it is killed
head -c @BYTES@ <&3
kill -KILL "$pid" 2>/dev/null
exec 3<&-
wait "$pid"
status=$?
rm -rf "$d"
echo "stand-in: killed @REAL@ after @BYTES@ bytes (its exit status: $status)" >&2
exit "$status"
