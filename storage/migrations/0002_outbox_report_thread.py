from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from storage.models import OutboxStatus
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0001_initial')]

    initial = False

    operations = [
        ops.CreateModel(
            name='OutboxMessage',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('team_id', fields.CharField(db_index=True, max_length=32)),
                ('method', fields.CharField(default='chat.postMessage', max_length=32)),
                ('channel', fields.CharField(max_length=32)),
                ('payload', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('thread_key', fields.CharField(null=True, db_index=True, max_length=128)),
                ('ref', fields.CharField(null=True, max_length=64)),
                ('status', fields.CharEnumField(default=OutboxStatus.PENDING, db_index=True, description='PENDING: pending\nSENT: sent\nFAILED: failed', enum_type=OutboxStatus, max_length=16)),
                ('attempts', fields.IntField(default=0)),
                ('next_attempt_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_error', fields.TextField(null=True, unique=False)),
                ('sent_channel', fields.CharField(null=True, max_length=32)),
                ('sent_ts', fields.CharField(null=True, max_length=32)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('sent_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'outbox_message', 'app': 'models', 'pk_attr': 'id', 'table_description': 'A Slack message waiting to be delivered, in order, surviving Slack outages and bot restarts.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='ReportThread',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('team_id', fields.CharField(db_index=True, max_length=32)),
                ('thread_key', fields.CharField(unique=True, max_length=128)),
                ('channel', fields.CharField(max_length=32)),
                ('ts', fields.CharField(max_length=32)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'report_thread', 'app': 'models', 'pk_attr': 'id', 'table_description': "The parent message of a chain's report thread for one day, so the day's reports reply to it."},
            bases=['Model'],
        ),
    ]
