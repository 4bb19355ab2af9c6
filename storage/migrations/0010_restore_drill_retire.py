from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from storage.models import BackupType, ChainStatus, RunKind
from tortoise import fields
from storage.migration_ops import StateOnlyAlterField

class Migration(migrations.Migration):
    dependencies = [('models', '0009_history_tokens_replays')]

    initial = False

    # The enum changes add values only: nothing changes in the database (and on SQLite a real AlterField would
    # rebuild the tables and lose their indexes, see storage.migration_ops).
    operations = [
        StateOnlyAlterField(
            model_name='BackupChain',
            name='status',
            field=fields.CharEnumField(default=ChainStatus.DRAFT, description='DRAFT: draft\nPENDING_APPROVAL: pending_approval\nACTIVE: active\nPAUSED: paused\nREJECTED: rejected\nRETIRED: retired', enum_type=ChainStatus, max_length=24),
        ),
        ops.AddField(
            model_name='BackupChain',
            name='retired_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        StateOnlyAlterField(
            model_name='BackupSource',
            name='type',
            field=fields.CharEnumField(description='FILES: files\nMYSQL: mysql\nPOSTGRESQL: postgresql\nMONGODB: mongodb\nDOCKER: docker\nSYSTEM: system\nBOT_DATABASE: bot_database', enum_type=BackupType, max_length=16),
        ),
        StateOnlyAlterField(
            model_name='BackupTemplate',
            name='backup_type',
            field=fields.CharEnumField(description='FILES: files\nMYSQL: mysql\nPOSTGRESQL: postgresql\nMONGODB: mongodb\nDOCKER: docker\nSYSTEM: system\nBOT_DATABASE: bot_database', enum_type=BackupType, max_length=16),
        ),
        StateOnlyAlterField(
            model_name='Run',
            name='kind',
            field=fields.CharEnumField(description='BACKUP: backup\nPRUNE: prune\nCOMPACT: compact\nCHECK: check\nTEST: test\nRESTORE: restore\nDRILL: drill', enum_type=RunKind, max_length=16),
        ),
        ops.AddField(
            model_name='Run',
            name='spec',
            field=fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads),
        ),
    ]
