from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0002_outbox_report_thread')]

    initial = False

    operations = [
        ops.AddField(
            model_name='Run',
            name='job_id',
            field=fields.BigIntField(null=True, db_index=True),
        ),
        ops.AddField(
            model_name='Run',
            name='worker_id',
            field=fields.CharField(null=True, max_length=128),
        ),
    ]
