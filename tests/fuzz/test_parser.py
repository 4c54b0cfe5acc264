"""squirrel.api.JSONParser: a request body nested too deeply is a parse error, not a 500.

DRF's parser lets the RecursionError through (found while probing what the fuzzer reported:
POST /v1/pvs/live with 5,000 nested arrays answered 500). The project parser turns it into
the ParseError every other malformed body gets, once settings name it in
DEFAULT_PARSER_CLASSES.
"""

from __future__ import annotations

import io

import pytest
from rest_framework.exceptions import ParseError

from squirrel.api import JSONParser


def test_nested_too_deeply_is_a_parse_error():
    body = io.BytesIO(b'{"pv_names": ' + b"[" * 5000 + b"]" * 5000 + b"}")
    with pytest.raises(ParseError, match="nested too deeply"):
        JSONParser().parse(body)


def test_ordinary_bodies_parse_as_before():
    assert JSONParser().parse(io.BytesIO(b'{"pv_names": [["a"]]}')) == {"pv_names": [["a"]]}
    with pytest.raises(ParseError, match="JSON parse error"):
        JSONParser().parse(io.BytesIO(b"{bad"))
