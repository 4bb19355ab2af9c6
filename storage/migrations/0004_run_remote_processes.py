from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0003_run_queue_jobs')]

    initial = False

    operations = [
        ops.AddField(
            model_name='Run',
            name='remote',
            field=fields.JSONField(null=True),
        ),
    ]
