#!/bin/sh
# STAND-IN for mongorestore (MongoDB Database Tools) — not the real program: no MongoDB server or tools can be
# installed on this machine. Installed as "mongorestore" first on an sshd test host's PATH by
# tests/test_restore_mongodb.py. It records its argv (one per line) to @RECORD@.args, the sha256 of what it reads
# on stdin (the dump streamed out of borg) to @RECORD@.stdin, and, given --config=/dev/fd/5, the sha256 of that
# config (where the real mongorestore reads the password) to @RECORD@.config; then it "creates" the target by
# writing @STATE@ (read by the mongosh stand-in). With FAIL=yes it exits 1 with a mongorestore-like error.
record=@RECORD@
: > "$record.args"
for a do printf '%s\n' "$a" >> "$record.args"; done
case " $* " in
  *" --config=/dev/fd/5 "*) sha256sum < /dev/fd/5 | cut -d' ' -f1 > "$record.config" ;;
esac
sha256sum | cut -d' ' -f1 > "$record.stdin"
if [ "@FAIL@" = yes ]; then
  echo "Failed: shop.orders: error restoring from archive: not authorized on target (stand-in)" >&2
  exit 1
fi
printf 'orders 3\nusers 2\n' > "@STATE@"
echo "5 document(s) restored successfully. 0 document(s) failed to restore. (stand-in)" >&2
