"""In-memory tables of Stripe objects, ids, and Stripe's cursor pagination."""

from __future__ import annotations

import copy
import random
import string
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from .errors import invalid, missing
from .wire import as_int

_ALPHABET = string.ascii_letters + string.digits

Obj = dict[str, Any]


def wall_now() -> int:
    return int(time.time())


def customer_now(store: Store, customer: Obj | None) -> int:
    """The customer's 'now': its test clock's frozen time, else real time."""
    clock_id = customer.get("test_clock") if customer else None
    if clock_id:
        clock = store.find("test_helpers.test_clock", clock_id)
        if clock is not None:
            return int(clock["frozen_time"])
    return wall_now()


def public(obj: Obj) -> Obj:
    """A deep copy without private bookkeeping keys (those starting with `_`)."""
    return {key: copy.deepcopy(value) for key, value in obj.items() if not key.startswith("_")}


class Store:
    """Every object by resource name and id; one re-entrant lock guards all of it."""

    def __init__(self, seed: int) -> None:
        self.lock = threading.RLock()
        self.tables: dict[str, dict[str, Obj]] = {}
        self._rng = random.Random(seed)

    def new_id(self, prefix: str, length: int = 24) -> str:
        with self.lock:
            return prefix + "_" + "".join(self._rng.choice(_ALPHABET) for _ in range(length))

    def random(self) -> float:
        with self.lock:
            return self._rng.random()

    def table(self, resource: str) -> dict[str, Obj]:
        return self.tables.setdefault(resource, {})

    def put(self, resource: str, obj: Obj) -> Obj:
        with self.lock:
            self.table(resource)[obj["id"]] = obj
            return obj

    def find(self, resource: str, object_id: str) -> Obj | None:
        with self.lock:
            return self.table(resource).get(object_id)

    def get(self, resource: str, object_id: str, label: str | None = None) -> Obj:
        obj = self.find(resource, object_id)
        if obj is None or obj.get("deleted"):
            raise missing(label or resource, object_id)
        return obj

    def delete(self, resource: str, object_id: str, label: str | None = None) -> Obj:
        with self.lock:
            obj = self.get(resource, object_id, label)
            del self.table(resource)[object_id]
            return {"id": object_id, "object": obj.get("object", resource), "deleted": True}

    def all(self, resource: str) -> list[Obj]:
        with self.lock:
            return list(self.table(resource).values())


def paginate(
    items: Iterable[Obj],
    params: dict[str, Any],
    url: str,
    render: Callable[[Obj], Obj] = public,
) -> Obj:
    """A Stripe list object over `items` (newest first): limit, starting_after, ending_before."""
    ordered = list(items)
    limit = as_int(params, "limit", 10) or 10
    if not 1 <= limit <= 100:
        raise invalid("Invalid limit: must be between 1 and 100", param="limit")
    ids = [item["id"] for item in ordered]
    after, before = params.get("starting_after"), params.get("ending_before")
    if after:
        if after not in ids:
            raise invalid(f"No such object: '{after}'", param="starting_after")
        page = ordered[ids.index(after) + 1 :]
        chosen, has_more = page[:limit], len(page) > limit
    elif before:
        if before not in ids:
            raise invalid(f"No such object: '{before}'", param="ending_before")
        page = ordered[: ids.index(before)]
        chosen, has_more = page[-limit:], len(page) > limit
    else:
        chosen, has_more = ordered[:limit], len(ordered) > limit
    return {
        "object": "list",
        "data": [render(item) for item in chosen],
        "has_more": has_more,
        "url": url,
    }
