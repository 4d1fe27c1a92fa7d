"""The deliberately invalid messages (``--bad-rate``): each kind is one fault the DLQ handles."""

from __future__ import annotations

from typing import Any

import orjson

from app.contract import MAX_ID_LENGTH

#: The kinds of deliberately invalid messages (``--bad-rate``), each one fault the DLQ handles.
BAD_KINDS = ("bad_json", "missing_field", "wrong_type", "negative_amount", "bad_currency",
             "oversize_string")


def corrupt(kind: str, content: dict[str, Any], canonical: bytes, txn_id: str,
            pick: int) -> bytes:
    """One invalid message of ``kind``; every other field stays right (the id too, when the
    message still has one), so the validator's reason is exactly the intended fault. ``pick``
    (a random number) chooses among the variants of the kind."""
    bad = dict(content)
    if kind == "bad_json":
        good = b'{"txn_id":"' + txn_id.encode() + b'",' + canonical[1:]
        return good[: len(good) // 2]
    if kind == "missing_field":
        del bad[("amount", "currency", "timestamp", "merchant_id", "status", "location")[pick % 6]]
    elif kind == "wrong_type":
        bad["amount"] = f"{content['amount']:.2f}"
    elif kind == "negative_amount":
        bad["amount"] = -content["amount"]
    elif kind == "bad_currency":
        bad["currency"] = ("usd", "EURO", "U$", "12X")[pick % 4]
    elif kind == "oversize_string":
        bad["merchant_id"] = content["merchant_id"] + "_" + "x" * (MAX_ID_LENGTH + pick % 200)
    else:
        raise ValueError(f"unknown kind of bad message: {kind}")
    return orjson.dumps({"txn_id": txn_id, **bad})
