"""Services of the PV catalog: every write (``catalog``) and the CSV import/export
(``transfer``). Callers import from here: ``from pvs import services``."""

from pvs.services.catalog import (
    EMPTY_ADDRESS,
    NewPV,
    catalog_changed,
    pv_create,
    pv_create_many,
    pv_delete,
    pv_fields,
    pv_get,
    pv_live_values,
    pv_restore_policy_set,
    pv_set_read_only,
    pv_stage_set,
    pv_tag_add,
    pv_tag_remove,
    pv_update,
)
from pvs.services.transfer import ImportResult, Progress, pv_export_rows, pv_import

__all__ = [
    "EMPTY_ADDRESS",
    "ImportResult",
    "NewPV",
    "Progress",
    "catalog_changed",
    "pv_create",
    "pv_create_many",
    "pv_delete",
    "pv_export_rows",
    "pv_get",
    "pv_fields",
    "pv_restore_policy_set",
    "pv_stage_set",
    "pv_import",
    "pv_live_values",
    "pv_set_read_only",
    "pv_tag_add",
    "pv_tag_remove",
    "pv_update",
]
