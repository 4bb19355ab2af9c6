from tortoise import migrations
from tortoise.migrations import operations as ops

from storage.migration_ops import restore_sqlite_indexes


class Migration(migrations.Migration):
    """SQLite only: the indexes and unique constraints that table rebuilds in 0007 (and an earlier 0010) lost."""

    dependencies = [('models', '0010_restore_drill_retire')]

    initial = False

    operations = [
        ops.RunPython(restore_sqlite_indexes, ops.RunPython.noop),
    ]
