"""``memory``: the pubsub store in dicts of this process (for tests)."""

from __future__ import annotations

from typing import Collection, Mapping, Sequence

from . import Item, LastItem, PubSubNode, PubSubStore, register
from .state import (NodeState, check_affiliation, check_config, check_items, check_publish,
                    check_str, now_ms, restored)


@register("memory")
class MemoryPubSub(PubSubStore):
    """Everything in dicts of this process (for tests); nothing survives it.

    Every method runs without awaiting, so each is atomic in its event loop.
    ``subscriptions_of`` scans the service's nodes. What is returned is a
    copy: changing it changes nothing stored.
    """

    def __init__(self) -> None:
        self._services: dict[str, dict[str, NodeState]] = {}

    def _node(self, service: str, node: str) -> NodeState | None:
        return self._services.get(check_str(service, "service"), {}).get(check_str(node, "node"))

    async def create(self, service: str, node: str, owner: str,
                     config: Mapping[str, str]) -> bool:
        conf = check_config(config)
        check_str(owner, "owner")
        if self._node(service, node) is not None:
            return False
        self._services.setdefault(service, {})[node] = NodeState(
            owner=owner, created=now_ms(), config=conf, affiliations={owner: "owner"})
        return True

    async def delete(self, service: str, node: str) -> bool:
        if self._node(service, node) is None:
            return False
        nodes = self._services[service]
        del nodes[node]
        if not nodes:
            del self._services[service]
        return True

    async def nodes(self, service: str) -> list[str]:
        return sorted(self._services.get(check_str(service, "service"), {}))

    async def get(self, service: str, node: str) -> PubSubNode | None:
        state = self._node(service, node)
        return None if state is None else state.info(service, node)

    async def configure(self, service: str, node: str, config: Mapping[str, str]) -> bool:
        conf = check_config(config)
        state = self._node(service, node)
        if state is None:
            return False
        state.config = conf
        return True

    async def affiliations(self, service: str, node: str) -> dict[str, str]:
        state = self._node(service, node)
        return {} if state is None else dict(state.affiliations)

    async def set_affiliation(self, service: str, node: str, jid: str,
                              affiliation: str | None) -> bool:
        affiliation = check_affiliation(affiliation)
        check_str(jid, "jid")
        state = self._node(service, node)
        if state is None:
            return False
        if affiliation is None:
            state.affiliations.pop(jid, None)
        else:
            state.affiliations[jid] = affiliation
        return True

    async def subscriptions(self, service: str, node: str) -> dict[str, str]:
        state = self._node(service, node)
        return {} if state is None else dict(state.subscriptions)

    async def subscribe(self, service: str, node: str, jid: str, subid: str) -> bool:
        check_str(jid, "jid")
        check_str(subid, "subid")
        state = self._node(service, node)
        if state is None:
            return False
        state.subscriptions[jid] = subid
        return True

    async def unsubscribe(self, service: str, node: str, jid: str) -> bool:
        state = self._node(service, node)
        return (state is not None
                and state.subscriptions.pop(check_str(jid, "jid"), None) is not None)

    async def subscriptions_of(self, service: str, jid: str) -> dict[str, str]:
        check_str(jid, "jid")
        return {name: state.subscriptions[jid]
                for name, state in self._services.get(check_str(service, "service"), {}).items()
                if jid in state.subscriptions}

    async def publish(self, service: str, node: str, item_id: str, payload: bytes,
                      publisher: str, max_items: int | None) -> list[str] | None:
        check_publish(item_id, payload, publisher, max_items)
        state = self._node(service, node)
        if state is None:
            return None
        return state.publish(item_id, payload, publisher, max_items)

    async def retract(self, service: str, node: str, item_id: str) -> bool:
        state = self._node(service, node)
        return (state is not None
                and state.items.pop(check_str(item_id, "item id"), None) is not None)

    async def items(self, service: str, node: str, max_items: int | None = None,
                    ids: list[str] | None = None) -> list[Item]:
        wanted = check_items(max_items, ids)
        state = self._node(service, node)
        return [] if state is None else state.select(max_items, wanted)

    async def purge(self, service: str, node: str) -> int | None:
        state = self._node(service, node)
        if state is None:
            return None
        n = len(state.items)
        state.items.clear()
        return n

    async def last_items(self, services: Sequence[str], nodes: Collection[str],
                         jid: str) -> list[LastItem]:
        out = []
        wanted = sorted(set(nodes))
        for service in dict.fromkeys(services):
            found = self._services.get(check_str(service, "service"), {})
            for name in wanted:
                state = found.get(name)
                if state is not None:
                    newest = state.select(1, None)
                    out.append(LastItem(service, name, dict(state.config),
                                        state.affiliations.get(jid, "none"),
                                        newest[0] if newest else None))
        return out

    async def restore(self, node: PubSubNode, affiliations: Mapping[str, str],
                      subscriptions: Mapping[str, str], items: list[Item]) -> None:
        state = restored(node, affiliations, subscriptions, items)
        self._services.setdefault(check_str(node.service, "service"), {})[
            check_str(node.name, "node")] = state
