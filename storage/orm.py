"""The ORM's vocabulary for the rest of the application: transactions, expressions, aggregates, ORM errors.

Only :mod:`storage` imports Tortoise (an import contract checks it), so the application names these through here;
swapping or upgrading the ORM touches this package only.
"""

from __future__ import annotations

from tortoise.exceptions import BaseORMException, DoesNotExist, IntegrityError, OperationalError
from tortoise.expressions import F, Q
from tortoise.functions import Count, Max
from tortoise.queryset import QuerySet
from tortoise.transactions import in_transaction

__all__ = [
    "BaseORMException",
    "Count",
    "DoesNotExist",
    "F",
    "IntegrityError",
    "Max",
    "OperationalError",
    "Q",
    "QuerySet",
    "in_transaction",
]
