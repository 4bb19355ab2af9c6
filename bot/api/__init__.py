"""The seed's HTTP API (``/api/backup-wizard/…``), served beside Slack's request URL in HTTP mode.

Authentication is a per-workspace bearer token (``backup-bot api-token --team T…`` creates one); the token
decides the workspace, so every query is scoped to it exactly as Slack requests are.
"""
