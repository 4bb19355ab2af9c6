from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0006_role_grant')]

    initial = False

    operations = [
        ops.AlterModelOptions(
            name='Approval',
            options={'table': 'approval', 'app': 'models', 'pk_attr': 'id', 'table_description': "A request for a person to approve a chain, or a wizard's answers before anything is set up for them (then"},
        ),
        ops.AlterField(
            model_name='Approval',
            name='chain',
            field=fields.ForeignKeyField('models.BackupChain', source_field='chain_id', null=True, db_constraint=True, to_field='id', related_name='approvals', on_delete=OnDelete.CASCADE),
        ),
        ops.AddField(
            model_name='Approval',
            name='fingerprint',
            field=fields.CharField(null=True, max_length=64),
        ),
        ops.AddField(
            model_name='Approval',
            name='session_id',
            field=fields.UUIDField(null=True, db_index=True),
        ),
        ops.AddField(
            model_name='Approval',
            name='summary',
            field=fields.TextField(null=True, unique=False),
        ),
    ]
