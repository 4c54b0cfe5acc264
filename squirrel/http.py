"""The HTTP edge every view shares: query and body parsing, and validation errors in the envelope.

A validation error is ``Invalid`` (422) with FastAPI-like field errors ``{loc, msg, type}``
(contract §1.4); ``squirrel.exceptions.exception_handler`` answers it. Views build none of these
dicts themselves: they call ``field_error``/``invalid`` for a rule they check by hand, or
``validated`` for a serializer.
"""

from __future__ import annotations

from typing import Any, TypedDict, TypeVar

from rest_framework.exceptions import ErrorDetail
from rest_framework.serializers import BaseSerializer

from squirrel.exceptions import Invalid, flatten_errors, validation_message


class FieldError(TypedDict):
    """One field's error, as the frontend reads it (``loc`` starts with body/query/path)."""

    loc: list[str | int]
    msg: str
    type: str


def field_error(loc: list[str | int], msg: str, type: str) -> FieldError:
    return {"loc": loc, "msg": msg, "type": type}


def invalid(loc: list[str | int], msg: str, type: str, *, message: str | None = None) -> Invalid:
    """The 422 of one field; its message "Validation error: <dotted field>: <msg>" unless
    ``message`` says otherwise."""
    errors: list[dict[str, Any]] = [dict(field_error(loc, msg, type))]
    return Invalid(message or validation_message(errors), errors)


S = TypeVar("S", bound=BaseSerializer)


def valid(serializer: S, where: str = "body") -> S:
    """The serializer, validated; else Invalid (422) with its field errors located in
    ``where`` (``body`` or ``query``)."""
    if not serializer.is_valid():
        errors = flatten_errors(serializer.errors, where=where)
        raise Invalid(validation_message(errors), errors)
    return serializer


def validated(serializer: BaseSerializer, where: str = "body") -> Any:
    """The serializer's ``validated_data`` (see ``valid``)."""
    return valid(serializer, where).validated_data


def valid_filterset(filterset: Any, where: str = "query") -> Any:
    """A django-filter FilterSet, validated; else Invalid (422) with each field's messages and
    codes located in ``where``, as a serializer's would be."""
    if not filterset.is_valid():
        detail = {
            field: [ErrorDetail(e["message"], e["code"] or "invalid") for e in errors]
            for field, errors in filterset.errors.get_json_data().items()
        }
        errors = flatten_errors(detail, where=where)
        raise Invalid(validation_message(errors), errors)
    return filterset


def query_data(
    params: Any, *names: str, lists: tuple[str, ...] = (), blank_is_absent: bool = False
) -> dict[str, Any]:
    """A QueryDict as serializer input: only ``names`` if given (else every key), repeated keys
    as lists for ``lists``, and with ``blank_is_absent`` an empty value (``limit=``) left out."""
    keys = names or tuple(params)
    data: dict[str, Any] = {k: params.get(k) for k in keys if k in params}
    if blank_is_absent:
        data = {k: v for k, v in data.items() if v not in (None, "")}
    for name in lists:
        if name in params:
            data[name] = params.getlist(name)
    return data


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def query_bool(params: Any, name: str, default: bool) -> bool:
    """A boolean query parameter (true/false/1/0/yes/no/on/off; absent or blank: ``default``),
    else 422."""
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise invalid(
        ["query", name],
        "Input should be a valid boolean",
        "bool",
        message=f"Validation error: {name}: not a boolean",
    )


def body_object(data: Any, *, empty_ok: bool = False) -> dict[str, Any]:
    """A request body that must be a JSON object; with ``empty_ok`` no body at all is ``{}``."""
    if empty_ok and (data is None or data == {} or data == ""):
        return {}
    if not isinstance(data, dict):
        raise Invalid(
            "Validation error: body: expected an object",
            [dict(field_error(["body"], "Input should be an object", "dict_type"))],
        )
    return data
