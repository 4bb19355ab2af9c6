#!/bin/sh
# STAND-IN for mongodump (MongoDB Database Tools) — not the real program: no MongoDB server or tools can be
# installed on this machine. Installed as "mongodump" first on an sshd test host's PATH by
# tests/test_sources_mongodb.py. It records what it was given and writes a known byte stream:
#   - its argv, one argument per line, to @RECORD@.args;
#   - the sha256 of what it reads from stdin when given --config=/dev/stdin (where the real mongodump reads
#     its YAML config with the password) to @RECORD@.config — the test compares hashes, the password itself
#     is never written;
#   - on stdout: a header line and @LINES@ numbered lines (what `--archive` with no value writes: the dump).
# With FAIL=yes it stops after half the lines and exits 1 with a mongodump-like error: a dump failing
# half-way. The stream format is this stand-in's own, not mongodump's archive format.
record=@RECORD@
: > "$record.args"
for a do printf '%s\n' "$a" >> "$record.args"; done
case " $* " in
  *" --config=/dev/stdin "*) sha256sum | cut -d' ' -f1 > "$record.config" ;;
esac
printf 'STAND-IN MONGODUMP STREAM\n'
if [ "@FAIL@" = yes ]; then
  seq -f 'document %08g of the stand-in stream' 0 $((@LINES@ / 2))
  echo "Failed: error writing data for collection shop.orders to archive: connection reset (stand-in)" >&2
  exit 1
fi
seq -f 'document %08g of the stand-in stream' 0 $((@LINES@ - 1))
