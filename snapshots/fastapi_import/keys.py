"""Phase "keys": API keys with their ids, names, hashes, scopes and active flags, so that every
token a script holds keeps working unchanged.

Both backends store a token as the SHA-256 hex digest of its text (``squirrel.models.
hash_token``; the FastAPI Squirrel's ``api_key.token_hash``), so the hash moves as it is. The
FastAPI Squirrel has no admin scope: imported keys have none (the first admin key comes from
``manage.py create_api_key NAME --read --admin``). ``created_by`` names the operator who ran the
import (``cli:<login>``). The FastAPI Squirrel's write scope also wrote the machine (restores);
ours keeps that apart as the restore scope, so an imported write key gets restore too and its
scripts go on restoring (``restore_access`` follows ``write_access``, ``--update`` included).

Conflicts, reported by key (the phase then writes nothing): the token's hash held here by
another key; an active key's name held here by another active key (names of active keys are
unique); a key without read or write scope (ours must have one).
"""

from __future__ import annotations

import re

from snapshots.fastapi_import.report import PhaseReport
from snapshots.fastapi_import.source import Source
from snapshots.fastapi_import.target import copy_rows, update_rows
from squirrel import audit
from squirrel.models import ApiKey

_HASH = re.compile(r"[0-9a-f]{64}")
FIELDS = ("app_name", "is_active", "read_access", "write_access", "restore_access")
COLUMNS = ("id", "token_hash", *FIELDS, "admin_access", "created_by", "created_at", "updated_at")


def keys_import(*, source: Source, report: PhaseReport, update: bool) -> None:
    """Import the API keys into ``report``'s counts (module docstring)."""
    count = report.table("api_key")
    ours = {k["id"]: k for k in ApiKey.objects.values("id", "token_hash", *FIELDS)}
    by_hash = {k["token_hash"]: pk for pk, k in ours.items()}
    active = {k["app_name"]: pk for pk, k in ours.items() if k["is_active"]}
    operator = audit.cli()
    create = []
    changes = []
    for kid, name, token_hash, is_active, read, write, created, updated in source.rows(
        "SELECT id, app_name, token_hash, is_active, read_access, write_access, created_at,"
        " updated_at FROM api_key ORDER BY created_at, id"
    ):
        count.read += 1
        label = f"api key {name!r} ({kid})"
        if not _HASH.fullmatch(token_hash or ""):
            report.conflicts.append(f"{label}: its token hash is not a SHA-256 hex digest")
            continue
        if not (read or write):
            report.conflicts.append(f"{label}: has neither read nor write scope")
            continue
        holder = by_hash.get(token_hash)
        if holder is not None and holder != kid:
            report.conflicts.append(f"{label}: its token belongs here to another key, {holder}")
            continue
        name_holder = active.get(name)
        taken = is_active and name_holder is not None and name_holder != kid
        if taken and (kid not in ours or update):
            report.conflicts.append(f"{label}: the name is taken here by active key {name_holder}")
            continue
        fields = (name, is_active, read, write, write)  # restore follows write (docstring)
        if kid not in ours:
            count.created += 1
            create.append((kid, token_hash, *fields, False, operator, created, updated))
        elif ours[kid]["token_hash"] != token_hash:
            report.conflicts.append(f"{label}: exists here with another token")
            continue
        elif tuple(ours[kid][f] for f in FIELDS) == fields:
            count.unchanged += 1
        elif update:
            count.updated += 1
            changes.append((kid, *fields))
        else:
            count.differing += 1
            continue
        if is_active:
            active[name] = kid
        by_hash[token_hash] = kid
    if report.conflicts:
        return
    copy_rows("api_key", COLUMNS, create)
    update_rows("api_key", "id", FIELDS, changes, stamp=True)
