"""Errors of the storage layer, each worded for the person who has to fix it."""


class StorageError(Exception):
    """Base class: the message is a complete sentence that says what to do next."""


class SecretKeyError(StorageError):
    """The configured secret keys are missing, malformed, or cannot decrypt a stored secret."""


class DatabaseUnavailable(StorageError):
    """The database named by DATABASE_URL cannot be reached or used."""


class TenantScopeError(StorageError):
    """A query tried to reach a row without naming the Slack workspace it belongs to."""
