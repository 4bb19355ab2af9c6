from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0007_approvals_of_answers')]

    initial = False

    operations = [
        ops.AddField(
            model_name='Repository',
            name='size_checked_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='StoragePool',
            name='alert_active',
            field=fields.BooleanField(default=False),
        ),
        ops.AddField(
            model_name='StoragePool',
            name='measure_error',
            field=fields.TextField(null=True, unique=False),
        ),
    ]
