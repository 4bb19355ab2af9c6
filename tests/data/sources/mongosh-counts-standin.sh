#!/bin/sh
# STAND-IN for mongosh running bot/backup/restore_db.py's MONGO_COUNTS script — not the real program (no MongoDB
# here). It prints that script's labelled lines as mongosh would for the database named in $BW_TARGET: "@exists
# false" before the mongorestore stand-in wrote @STATE@, then "@exists true" and one "@count {...}" per collection
# listed in @STATE@. It records the script it was given (the last argument) to @RECORD@.script.
printf '%s' "$(eval "echo \${$#}")" > "@RECORD@.script"
if [ -s "@STATE@" ] || [ "$BW_TARGET" = "@EXISTING@" ]; then
  echo '@exists true'
  [ -s "@STATE@" ] && while read -r c n; do printf '@count {"c":"%s","n":%s}\n' "$c" "$n"; done < "@STATE@"
else
  echo '@exists false'
fi
echo '@end'
