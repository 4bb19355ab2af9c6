from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from storage.models import Integrity, TokenScope
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0008_pool_alerts_and_sizes')]

    initial = False

    operations = [
        ops.CreateModel(
            name='ApiToken',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('team_id', fields.CharField(db_index=True, max_length=32)),
                ('user_id', fields.CharField(null=True, max_length=32)),
                ('token_hash', fields.CharField(unique=True, max_length=64)),
                ('scope', fields.CharEnumField(default=TokenScope.READ, description='READ: read\nWRITE: write', enum_type=TokenScope, max_length=8)),
                ('label', fields.CharField(default='', max_length=100)),
                ('created_by', fields.CharField(default='', max_length=32)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('expires_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('revoked_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_used_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'api_token', 'app': 'models', 'pk_attr': 'id', 'table_description': 'A token of the HTTP API: only its SHA-256 is kept (looked up by index), with its scope, expiry and use.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='SeenRequest',
            fields=[
                ('key', fields.CharField(primary_key=True, unique=True, db_index=True, max_length=64)),
                ('seen_at', fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'seen_request', 'app': 'models', 'pk_attr': 'key', 'table_description': "A signed Slack request already handled (by its signature or trigger_id), kept for Slack's replay window,"},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='VerifiedArchive',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('team_id', fields.CharField(db_index=True, max_length=32)),
                ('repository', fields.ForeignKeyField('models.Repository', source_field='repository_id', db_constraint=True, to_field='id', related_name='verified_archives', on_delete=OnDelete.CASCADE)),
                ('name', fields.CharField(max_length=255)),
                ('archive_id', fields.CharField(max_length=64)),
                ('archive_time', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('run_id', fields.IntField(null=True)),
                ('recorded_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('removed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'verified_archive', 'app': 'models', 'unique_together': (('repository_id', 'archive_id'),), 'pk_attr': 'id', 'table_description': 'An archive the bot saw borg create and then listed at the end of a run it supervised: the record that'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Repository',
            name='integrity',
            field=fields.CharEnumField(default=Integrity.OK, description='OK: ok\nNEEDS_REVIEW: needs_review\nQUARANTINED: quarantined', enum_type=Integrity, max_length=16),
        ),
        ops.AddField(
            model_name='Repository',
            name='integrity_detail',
            field=fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads),
        ),
    ]
