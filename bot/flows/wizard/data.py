"""The shape of a wizard session's ``data`` (JSON, saved after every step). One place, read by every step.

Keys starting with ``_`` are the wizard's own (``_user_tz``, ``_result``). Secrets never go in here as
plaintext: a passphrase or password typed in the wizard is sealed first (``storage.crypto.Secret.seal(...)
.token``) and stored under a ``*_token`` key; new database credentials are saved as DatabaseCredential rows
at once and referenced by id.

    server_id: int                       step 1 — a Server of this workspace with a confirmed host key
    pending_server: {host, port, username, name, key_line, fingerprint}   step 1 — added, awaiting confirmation
    backup_type: "files"|"mysql"|"postgresql"|"mongodb"|"docker"|"system"            step 2
    source: {...}                        step 3 — the type's SourceConfig as a dict (bot/backup/sources)
    credential_id: int | None            step 3 — DatabaseCredential used by database types (None: socket/peer)
    atomicity: {atomic, method, reason}  step 3 — the verdict shown to the user
    snapshot: {method: "none"|"btrfs"|"lvm"|"zfs"}                                   step 4
    pool_id: int                                                                     step 5
    repository: {mode: "new"|"existing", name, encryption, compression, passphrase_token?}   step 6
    retention: {preset: str, keep_daily: int, keep_weekly: int, …}  (bot.backup.retention.Policy fields)  step 7
    schedule: {days: [mon…sun], at: "HH:MM" | None, window: ["HH:MM","HH:MM"] | None, timezone, priority}  step 8
    validation: {ok: bool, steps: [{name, ok, detail}], at: ISO-8601}               step 9
    template_id: int | None              prefilled from a template (`/backup new from:<name>`)
    chain_id: int                        set by step 10 when the chain was created
"""

from __future__ import annotations

SNAPSHOT_TYPES = ("files", "system", "mysql", "postgresql", "docker")  # a MongoDB dump has no snapshot step
DATABASE_TYPES = ("mysql", "postgresql", "mongodb")
