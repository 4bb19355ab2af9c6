#!/bin/sh
# STAND-IN for mysqldump inside a test container (the busybox image has no database): copied to
# /bin/mysqldump in a container of the docker_daemon fixture by tests/test_sources_docker.py. It reads the
# option file the way the real client does with --defaults-file=/dev/stdin, sleeps a moment (so the test can
# look at every process's argv on the host meanwhile), then writes a "dump" naming its arguments and the
# sha256 of the option file it received (the test compares hashes; the password itself is never printed).
for a do
  case $a in --defaults-file=/dev/stdin) sum=$(sha256sum | cut -d' ' -f1) ;; esac
done
sleep 1.5
echo "-- stand-in dump; args: $*"
echo "-- option file sha256: ${sum:-none}"
