"""manage.py import_pvs / export_pvs: format, errors with line and column, idempotence,
dry run, --update, --no-create-tags, round trip."""

from __future__ import annotations

import csv
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from pvs import csvio
from pvs.models import PV
from tags.models import Tag, TagGroup
from tests.pvs.factories import PVFactory
from tests.tags.factories import TagFactory, TagGroupFactory

pytestmark = pytest.mark.django_db

SAMPLE = """\
Setpoint,Readback,Description,Device,Config,AbsTolerance,RelTolerance,ReadOnly,Area,Kind
LI22:Q1:BCTRL,LI22:Q1:BACT,quad 1,LI22,,0.5,0.01,false,LI22,"magnet, quad"
LI22:Q2:BCTRL,,quad 2,LI22,LI22:Q2:CFG,,,true,LI22,nan

,LI22:BPM1:X,bpm,LI22,,,,,LI22,None
BSY:Q1:BCTRL,BSY:Q1:BACT,,BSY,,1e-3,0,no,BSY,magnet
"""


def run(tmp_path: Path, text: str, *args: str) -> str:
    path = tmp_path / "pvs.csv"
    path.write_text(text)
    out = StringIO()
    call_command("import_pvs", str(path), "--no-progress", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def failure(tmp_path: Path, text: str, *args: str) -> str:
    with pytest.raises(CommandError) as info:
        run(tmp_path, text, *args)
    return str(info.value)


def snapshot_of_catalog() -> list[tuple]:
    rows = []
    for pv in PV.objects.prefetch_related("tags__group").order_by(
        "setpoint_address", "readback_address", "config_address"
    ):
        tags = sorted((t.group.name, t.name) for t in pv.tags.all())
        rows.append(
            (
                pv.setpoint_address,
                pv.readback_address,
                pv.config_address,
                pv.device,
                pv.description,
                pv.abs_tolerance,
                pv.rel_tolerance,
                pv.read_only,
                tuple(tags),
            )
        )
    return rows


def test_import_creates_pvs_groups_and_tags(tmp_path):
    out = run(tmp_path, SAMPLE)
    assert out.startswith("4 created, 0 updated, 0 unchanged, 0 skipped")
    assert "2 tag groups and 4 tags created" in out
    q1 = PV.objects.get(setpoint_address="LI22:Q1:BCTRL")
    assert (q1.readback_address, q1.description, q1.device) == ("LI22:Q1:BACT", "quad 1", "LI22")
    assert (q1.abs_tolerance, q1.rel_tolerance, q1.read_only) == (0.5, 0.01, False)
    assert sorted((t.group.name, t.name) for t in q1.tags.all()) == [
        ("Area", "LI22"),
        ("Kind", "magnet"),
        ("Kind", "quad"),
    ]
    q2 = PV.objects.get(setpoint_address="LI22:Q2:BCTRL")
    assert (q2.readback_address, q2.config_address, q2.read_only) == (None, "LI22:Q2:CFG", True)
    assert [t.name for t in q2.tags.all()] == ["LI22"]  # nan = no tags
    bpm = PV.objects.get(readback_address="LI22:BPM1:X")
    assert bpm.setpoint_address is None
    assert PV.objects.get(setpoint_address="BSY:Q1:BCTRL").abs_tolerance == 0.001


def test_reimport_changes_nothing(tmp_path):
    run(tmp_path, SAMPLE)
    before = snapshot_of_catalog()
    stamps = sorted(PV.objects.values_list("updated_at", flat=True))
    out = run(tmp_path, SAMPLE)
    assert out.startswith("0 created, 0 updated, 4 unchanged, 0 skipped")
    assert snapshot_of_catalog() == before
    assert sorted(PV.objects.values_list("updated_at", flat=True)) == stamps


def test_existing_tags_matched_case_insensitively(tmp_path):
    group = TagGroupFactory(name="area")
    tag = TagFactory(group=group, name="li22")
    run(tmp_path, "Setpoint,Area\nA,LI22\n", "--no-create-tags")
    assert list(PV.objects.get().tags.all()) == [tag]
    assert TagGroup.objects.count() == 1 and Tag.objects.count() == 1


def test_dry_run_writes_nothing(tmp_path):
    out = run(tmp_path, SAMPLE, "--dry-run")
    assert "dry run" in out and "4 created" in out
    assert not PV.objects.exists() and not TagGroup.objects.exists()


def test_changed_rows_are_skipped_without_update(tmp_path):
    run(tmp_path, SAMPLE)
    changed = SAMPLE.replace("quad 1", "quad one").replace('"magnet, quad"', "magnet")
    out = run(tmp_path, changed)
    assert out.startswith("0 created, 0 updated, 3 unchanged, 1 skipped")
    assert PV.objects.get(setpoint_address="LI22:Q1:BCTRL").description == "quad 1"


def test_update_overwrites_only_changed_rows_and_columns(tmp_path):
    run(tmp_path, SAMPLE)
    other = TagFactory(name="keep")  # a tag of a group the file does not mention
    q1 = PV.objects.get(setpoint_address="LI22:Q1:BCTRL")
    q1.tags.add(other)
    changed = (
        SAMPLE.replace("quad 1", "quad one")
        .replace('"magnet, quad"', "magnet")
        .replace(",LI22:Q2:CFG,,,true,", ",,,,false,")
    )
    out = run(tmp_path, changed + "NEW:PV,,,,,,,,,\n", "--update")
    assert out.startswith("1 created, 2 updated, 2 unchanged, 0 skipped")
    q1.refresh_from_db()
    assert q1.description == "quad one"
    assert sorted(t.name for t in q1.tags.all()) == ["LI22", "keep", "magnet"]
    q2 = PV.objects.get(setpoint_address="LI22:Q2:BCTRL")
    assert (q2.config_address, q2.read_only) == (None, False)


def test_update_ignores_columns_missing_from_file(tmp_path):
    run(tmp_path, SAMPLE)
    out = run(tmp_path, "Setpoint,Description\nLI22:Q1:BCTRL,new\n", "--update")
    assert out.startswith("0 created, 1 updated, 0 unchanged")
    q1 = PV.objects.get(setpoint_address="LI22:Q1:BCTRL")
    assert (q1.description, q1.abs_tolerance, q1.readback_address) == ("new", 0.5, "LI22:Q1:BACT")
    assert q1.tags.count() == 3


def test_no_create_tags_names_line_and_column(tmp_path):
    TagGroupFactory(name="Area")
    message = failure(tmp_path, "Setpoint,Area,Kind\nA,LI22,\nB,,x\n", "--no-create-tags")
    assert "line 2, column 2 (Area): unknown tag 'LI22' in group 'Area'" in message
    assert "line 1, column 3 (Kind): unknown tag group 'Kind'" in message
    assert not PV.objects.exists() and Tag.objects.count() == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Readback,Setpoint\nA:RB,A\nB:RB,A\n",
            "line 3, column 2 (Setpoint): 'A' is already on line 2",
        ),
        (
            "Setpoint,AbsTolerance\nA,abc\n",
            "line 2, column 2 (AbsTolerance): 'abc' is not a number",
        ),
        ("Setpoint,RelTolerance\nA,-1\n", "line 2, column 2 (RelTolerance): '-1' must be"),
        ("Setpoint,RelTolerance\nA,nan\n", "line 2, column 2 (RelTolerance): 'nan' must be"),
        ("Setpoint,ReadOnly\nA,maybe\n", "line 2, column 2 (ReadOnly): 'maybe' is not true/false"),
        ("Setpoint\n" + "A" * 256 + "\n", "line 2, column 1 (Setpoint): longer than 255"),
        ("Setpoint,Device\nA,B,C\n", "line 2: 3 cells but the header has 2"),
        ("Description,Device\nA,B\n", 'header missing required columns "Setpoint" or "Readback"'),
        ("Setpoint,,Area\nA,,\n", "line 1, column 2: empty column name"),
        ("Setpoint,Area,area\nA,,\n", "line 1, column 3 (area): duplicate of column 2"),
        ("", "line 1: the file is empty"),
        ("Setpoint,device\nA,B\n", "line 1, column 2 (device): did you mean 'Device'?"),
    ],
)
def test_errors_name_line_and_column(tmp_path, text, expected):
    assert expected in failure(tmp_path, text)
    assert not PV.objects.exists()


def test_one_bad_row_writes_nothing(tmp_path):
    text = "Setpoint,AbsTolerance,Area\n" + "".join(f"P{i},0,t\n" for i in range(100)) + "X,bad,t\n"
    assert "line 102" in failure(tmp_path, text)
    assert not PV.objects.exists() and not TagGroup.objects.exists()


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CommandError, match="cannot read"):
        call_command("import_pvs", str(tmp_path / "nope.csv"), "--no-progress")


def test_progress_goes_to_stderr(tmp_path):
    path = tmp_path / "pvs.csv"
    path.write_text("Setpoint\n" + "".join(f"P{i}\n" for i in range(6000)))
    out, err = StringIO(), StringIO()
    call_command("import_pvs", str(path), stdout=out, stderr=err)
    assert "6000 created" in out.getvalue()
    assert "100%" in err.getvalue() and "6000 created" not in err.getvalue()


def test_export_import_round_trip(tmp_path):
    run(tmp_path, SAMPLE)
    PVFactory(config_address="ONLY:CFG", setpoint_address=None, description='say "hi", ok')
    PVFactory(setpoint_address="T:1", abs_tolerance=0.1 + 0.2, read_only=True)
    before = snapshot_of_catalog()
    exported = tmp_path / "out.csv"
    call_command("export_pvs", str(exported), stderr=StringIO())
    text = exported.read_text()
    assert text.splitlines()[0] == (
        "Setpoint,Readback,Config,Device,Description,AbsTolerance,RelTolerance,ReadOnly,"
        "RestoreStage,CompletionTimeout,Area,Kind"
    )
    assert '"magnet, quad"' in text
    # into the same catalog: nothing changes
    out = run(tmp_path, text)
    assert out.startswith("0 created, 0 updated, 6 unchanged, 0 skipped")
    # into an empty catalog: the same catalog again
    PV.objects.all().delete()
    TagGroup.objects.all().delete()
    out = run(tmp_path, text)
    assert out.startswith("6 created")
    assert snapshot_of_catalog() == before
    again = tmp_path / "again.csv"
    call_command("export_pvs", str(again), stderr=StringIO())
    assert again.read_text() == text


def test_export_refuses_unrepresentable_tag(tmp_path):
    PVFactory(tags=[TagFactory(name="a,b")])
    with pytest.raises(CommandError, match="cannot export"):
        call_command("export_pvs", str(tmp_path / "x.csv"), stderr=StringIO())


def test_export_to_stdout(tmp_path):
    PVFactory(setpoint_address="OUT:1", description="multi\nline")
    out = StringIO()
    call_command("export_pvs", "-", stdout=out)
    text = out.getvalue()
    assert text.startswith("Setpoint,Readback,Config,Device,Description")
    assert '"multi\nline"' in text
    PV.objects.all().delete()
    assert run(tmp_path, text).startswith("1 created")
    assert PV.objects.get().description == "multi\nline"


# --- CSV formula injection (issue 15, item 6) and NUL bytes (item 8) ---------------------------

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@pytest.mark.parametrize(
    ("cell", "safe"),
    [
        ("=1+1", "'=1+1"),
        ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
        ("@SUM(A1:A2)", "'@SUM(A1:A2)"),
        ("+X", "'+X"),
        ("-X", "'-X"),
        ("\tX", "'\tX"),
        ("\rX", "'\rX"),
        ("-inf", "'-inf"),
        ("'=x", "''=x"),  # already quoted: one more quote, so the import gives it back
        ("''@x", "'''@x"),
        ("-1.5", "-1.5"),  # numbers stay numbers
        ("+2", "+2"),
        ("-1e-3", "-1e-3"),
        ("'-1.5", "'-1.5"),
        ("plain", "plain"),
        ("'", "'"),
        ("", ""),
        (-1.5, -1.5),
        (3, 3),
    ],
)
def test_spreadsheet_safe_and_back(cell, safe):
    assert csvio.spreadsheet_safe(cell) == safe
    if isinstance(cell, str):
        assert csvio.spreadsheet_unescape(safe) == cell


def test_export_neutralises_formulas_and_round_trips(tmp_path):
    group = TagGroupFactory(name="=Group")
    PVFactory(
        setpoint_address="=1+1",
        readback_address="+RB",
        config_address="-CFG",
        device="@SUM(A1:A2)",
        description="=cmd|' /C calc'!A0",
        abs_tolerance=1.5,
        tags=[TagFactory(group=group, name="@tag"), TagFactory(group=group, name="b")],
    )
    PVFactory(setpoint_address="Q:1", description="'=already quoted", device="-1.5")
    quoted = TagFactory(group=group, name="'-x")
    PVFactory(setpoint_address="Q:2", description="\tTAB", tags=[quoted])
    PVFactory(setpoint_address="Q:3", description="\rCR")
    before = snapshot_of_catalog()
    exported = tmp_path / "out.csv"
    call_command("export_pvs", str(exported), stderr=StringIO())
    text = exported.read_bytes().decode()
    lines = list(csv.reader(StringIO(text)))
    assert lines[0][-1] == "'=Group"
    starts = [c for row in lines for c in row if c[:1] in FORMULA_STARTS]
    assert starts == ["-1.5"], starts  # only a plain number starts with one
    cells = {c for row in lines for c in row}
    assert {"'=1+1", "'+RB", "'-CFG", "'@SUM(A1:A2)", "'=cmd|' /C calc'!A0"} <= cells
    assert {"''=already quoted", "'\tTAB", "'\rCR", "'@tag, b", "''-x"} <= cells
    # into an empty catalog: the same catalog again, and the same file
    PV.objects.all().delete()
    TagGroup.objects.all().delete()
    path = tmp_path / "in.csv"
    path.write_text(text, newline="")
    call_command("import_pvs", str(path), "--no-progress", stdout=StringIO(), stderr=StringIO())
    assert snapshot_of_catalog() == before
    again = tmp_path / "again.csv"
    call_command("export_pvs", str(again), stderr=StringIO())
    assert again.read_bytes().decode() == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Setpoint,Description\nA,he\x00llo\n", "line 2, column 2 (Description): contains a NUL"),
        ("Setpoint,Area\nA,\x00\n", "line 2, column 2 (Area): contains a NUL byte"),
        ("Setpoint\nA\x00B\n", "line 2, column 1 (Setpoint): contains a NUL byte"),
        ("Setpoint,Ar\x00ea\nA,x\n", "line 1, column 2: contains a NUL byte"),
    ],
)
def test_nul_byte_is_a_line_and_column_error(tmp_path, text, expected):
    assert expected in failure(tmp_path, text)
    assert not PV.objects.exists() and not TagGroup.objects.exists()
