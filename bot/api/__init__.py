"""The seed's HTTP API (``/api/backup-wizard/…``), served beside Slack's request URL in HTTP mode.

Authentication is a per-workspace bearer token (``backup-bot api-token create --team T…`` creates one; ``list`` and
``revoke`` manage them); the token decides the workspace, so every query is scoped to it exactly as Slack requests
are, and its scope decides whether it may change state or contact a server (``write``) or only read (``read``).
"""
