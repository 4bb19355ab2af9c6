import functools
from json import dumps, loads

from tortoise import fields, migrations
from tortoise.fields.base import OnDelete
from tortoise.migrations import operations as ops

from storage.models import Role


class Migration(migrations.Migration):
    dependencies = [('models', '0005_lease')]

    initial = False

    operations = [
        ops.CreateModel(
            name='RoleGrant',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('team_id', fields.CharField(db_index=True, max_length=32)),
                ('role', fields.CharEnumField(description='ADMIN: admin\nOPERATOR: operator', enum_type=Role, max_length=16)),
                ('subject', fields.CharField(max_length=32)),
                ('server', fields.ForeignKeyField('models.Server', source_field='server_id', null=True, db_constraint=True, to_field='id', related_name='grants', on_delete=OnDelete.CASCADE)),
                ('pool', fields.ForeignKeyField('models.StoragePool', source_field='pool_id', null=True, db_constraint=True, to_field='id', related_name='grants', on_delete=OnDelete.CASCADE)),
                ('paths', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('databases', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('granted_by', fields.CharField(default='', max_length=32)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'role_grant', 'app': 'models', 'pk_attr': 'id', 'table_description': 'A role given by an admin to a user, a user group or everyone: admin of the workspace, or operator of one'},
            bases=['Model'],
        ),
    ]
