"""One pubsub node's whole state in this process, and the argument checks,
shared by the memory and fs stores (the Redis store keeps its own)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from . import AFFILIATIONS, Item, PubSubNode


def now_ms() -> int:
    return int(time.time() * 1000)


def check_str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    return value


def check_config(config: Mapping[str, str], what: str = "config") -> dict[str, str]:
    """A copy of ``config``; TypeError unless it maps str to str."""
    out: dict[str, str] = {}
    for k, v in config.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"{what} must map str to str, not {k!r}: {v!r}")
        out[k] = v
    return out


def check_affiliation(affiliation: str | None) -> str | None:
    if affiliation == "none":
        return None
    if affiliation is not None and affiliation not in AFFILIATIONS:
        raise ValueError(f"unknown pubsub affiliation {affiliation!r}")
    return affiliation


def check_publish(item_id: str, payload: bytes, publisher: str, max_items: int | None) -> None:
    check_str(item_id, "item id")
    if not isinstance(payload, bytes):
        raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
    check_str(publisher, "publisher")
    if max_items is not None and (not isinstance(max_items, int)
                                  or isinstance(max_items, bool) or max_items < 1):
        raise ValueError(f"max_items must be a positive int or None, not {max_items!r}")


def check_items(max_items: int | None, ids: list[str] | None) -> list[str] | None:
    """The ids asked for, each once (None: the newest items)."""
    if max_items is not None and (not isinstance(max_items, int)
                                  or isinstance(max_items, bool) or max_items < 0):
        raise ValueError(f"max_items must be an int >= 0 or None, not {max_items!r}")
    if ids is None:
        return None
    return list(dict.fromkeys(check_str(i, "item id") for i in ids))


@dataclass
class NodeState:
    """One node's whole state; ``items`` in publication order, oldest first."""

    owner: str
    created: int
    config: dict[str, str]
    affiliations: dict[str, str]
    subscriptions: dict[str, str] = field(default_factory=dict)
    items: dict[str, Item] = field(default_factory=dict)

    def info(self, service: str, name: str) -> PubSubNode:
        return PubSubNode(service=service, name=name, owner=self.owner,
                          config=dict(self.config), created=self.created)

    def publish(self, item_id: str, payload: bytes, publisher: str,
                max_items: int | None) -> list[str]:
        self.items.pop(item_id, None)
        self.items[item_id] = Item(id=item_id, payload=payload, publisher=publisher,
                                   published=now_ms())
        evicted: list[str] = []
        if max_items is not None:
            extra = len(self.items) - max_items
            if extra > 0:
                evicted = list(self.items)[:extra]
                for i in evicted:
                    del self.items[i]
        return evicted

    def select(self, max_items: int | None, wanted: list[str] | None) -> list[Item]:
        if max_items == 0:
            return []
        if wanted is None:
            found = list(reversed(self.items.values()))
        else:
            found = [self.items[i] for i in wanted if i in self.items]
        if max_items is not None:
            found = found[:max_items]
        return [replace(i) for i in found]


def check_time(value: Any, what: str) -> int:
    """ValueError unless ``value`` is ms a store keeps: an int in 0..2**63-1
    (a SQL BIGINT)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2 ** 63:
        raise ValueError(f"{what} must be an int in 0..2**63-1, not {value!r}")
    return value


def restored(node: PubSubNode, affiliations: Mapping[str, str],
             subscriptions: Mapping[str, str], items: list[Item]) -> NodeState:
    """The state :meth:`PubSubStore.restore` stores, times kept, every argument
    checked (TypeError, ValueError) and copied."""
    check_str(node.owner, "owner")
    check_time(node.created, "created")
    affs = check_config(affiliations, "affiliations")
    for affiliation in affs.values():
        if check_affiliation(affiliation) is None:
            raise ValueError("affiliation 'none' is no entry")
    kept: dict[str, Item] = {}
    for item in items:
        check_publish(item.id, item.payload, item.publisher, None)
        check_time(item.published, f"published of item {item.id!r}")
        kept.pop(item.id, None)
        kept[item.id] = replace(item)
    return NodeState(owner=node.owner, created=node.created,
                     config=check_config(node.config), affiliations=affs,
                     subscriptions=check_config(subscriptions, "subscriptions"), items=kept)
