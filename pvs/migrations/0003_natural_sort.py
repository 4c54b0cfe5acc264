"""Natural address order for the PV browser (issue 16, item 3): an ICU collation whose numeric
option sorts digit runs by value (``DEV2`` before ``DEV10``), and an index on the PV's name in
that collation so a page in that order is an index walk, not a sort of 50K rows per request."""

from django.contrib.postgres.operations import CreateCollation
from django.db import migrations, models
from django.db.models.functions import Coalesce, Collate


class Migration(migrations.Migration):
    dependencies = [("pvs", "0002_trigram_search")]

    operations = [
        CreateCollation("natural_sort", provider="icu", locale="und-u-kn-true"),
        migrations.AddIndex(
            model_name="pv",
            index=models.Index(
                Collate(
                    Coalesce("setpoint_address", "readback_address", "config_address"),
                    "natural_sort",
                ),
                models.F("id"),
                name="ix_pv_natural_name",
            ),
        ),
    ]
