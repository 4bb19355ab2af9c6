"""The service layer: every operation that changes state or touches a server, decided in one place.

Each operation is one function that takes the acting :class:`~bot.access.Actor` (workspace, user, roles) first,
checks what that actor may do (:mod:`bot.access.authz`, and for a backup's answers :mod:`bot.services.gate`) before
anything happens, then acts and writes the audit log (:mod:`bot.access.audit`). It returns a typed result or raises
:class:`~bot.access.Refused`, whose one sentence says what was refused and who can allow it. Slack listeners, the
HTTP API and the CLI only parse input, call these functions and render what they return; nothing here knows Slack
or HTTP. The wizard (:mod:`bot.flows.wizard`) is a client too: it collects answers
(:class:`bot.services.answers.SessionData`) and hands them to :func:`bot.services.creation.create_chain`.
"""
