"""The service layer: every operation that changes state or touches a server, decided in one place.

Each operation is one function that takes the acting :class:`~bot.services.actor.Actor` (workspace, user, roles)
first, checks what that actor may do (:mod:`bot.services.authz`) before anything happens, then acts and writes the
audit log (:mod:`bot.services.audit`). It returns a typed result or raises :class:`~bot.services.errors.Refused`,
whose one sentence says what was refused and who can allow it. Slack listeners, the HTTP API and the CLI only parse
input, call these functions and render what they return; nothing here knows Slack or HTTP.
"""
