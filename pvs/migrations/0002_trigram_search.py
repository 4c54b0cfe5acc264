"""Trigram GIN indexes for the case-insensitive substring search over the five text columns
(contract §2.3 ``pvName``/``q``). Measured at 50K PVs: a selective ILIKE over all five columns
39 ms -> 1.2 ms; a term matching everything is unchanged (the planner keeps the seq scan).

The indexed expression is ``UPPER(col::text)`` because that is what Django's ``icontains``
compiles to on PostgreSQL. Plain SQL with no state change: the indexes are not declared on
the model, so they do not show up as model changes in makemigrations.
"""

from django.contrib.postgres.operations import TrigramExtension
from django.db import migrations

COLUMNS = ("setpoint_address", "readback_address", "config_address", "device", "description")


class Migration(migrations.Migration):
    dependencies = [("pvs", "0001_initial")]

    operations = [
        TrigramExtension(),
        *(
            migrations.RunSQL(
                f"CREATE INDEX IF NOT EXISTS ix_pv_{column}_trgm ON pv "
                f"USING gin ((UPPER({column}::text)) gin_trgm_ops)",
                f"DROP INDEX IF EXISTS ix_pv_{column}_trgm",
            )
            for column in COLUMNS
        ),
    ]
