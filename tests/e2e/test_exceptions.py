"""The exception handler answers a lost or refused database connection with a 503 in the
contract's error envelope, never a 500 (squirrel.exceptions)."""

from __future__ import annotations

import json

import pytest
from django.db import DatabaseError, DataError, IntegrityError, InterfaceError, OperationalError

from squirrel.api import EnvelopeJSONRenderer
from squirrel.exceptions import exception_handler


@pytest.mark.parametrize(
    "exc",
    [
        OperationalError("terminating connection due to administrator command"),
        InterfaceError("connection already closed"),
        DatabaseError("server closed the connection unexpectedly"),
    ],
    ids=["operational", "interface", "database"],
)
def test_database_connection_errors_are_503_in_the_envelope(exc: Exception) -> None:
    response = exception_handler(exc, {"view": None})
    assert response is not None and response.status_code == 503
    assert response.data == {"detail": "Database unavailable, try again"}
    body = json.loads(
        EnvelopeJSONRenderer().render(response.data, renderer_context={"response": response})
    )
    assert body == {
        "errorCode": 503,
        "errorMessage": "Database unavailable, try again",
        "payload": None,
        "detail": "Database unavailable, try again",
    }


def test_an_integrity_error_stays_a_409() -> None:
    response = exception_handler(IntegrityError("duplicate key value"), {"view": None})
    assert response is not None and response.status_code == 409


def test_a_data_error_is_bad_input_not_an_outage() -> None:
    """DataError (a NUL byte, a number out of range) is a DatabaseError, but the request's."""
    exc = DataError("A string literal cannot contain NUL (0x00) characters.")
    response = exception_handler(exc, {"view": None})
    assert response is not None and response.status_code == 422
    assert response.data["detail"].startswith("Invalid value: A string literal cannot contain NUL")
