"""Who may do what: the acting user and the roles they hold (:mod:`.actor`), the checks every operation makes
before its first effect (:mod:`.authz`), the refusals (:mod:`.errors`) and the audit writer (:mod:`.audit`).

Below both the wizard (:mod:`bot.flows`) and the service layer (:mod:`bot.services`), so either can check a role
without importing the other; it imports only storage.
"""

from bot.access.actor import Actor, Directory, NoDirectory, StaticDirectory, resolve_actor
from bot.access.errors import Forbidden, NotFound, Refused

__all__ = ["Actor", "Directory", "Forbidden", "NoDirectory", "NotFound", "Refused", "StaticDirectory", "resolve_actor"]
