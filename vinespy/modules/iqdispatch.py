"""Narrows IQs to ``iq-<type>/<to_type>/<ns>:<child>`` (Prosody mod_iq).

A get/set carries exactly one child (checked by the stream); results and
errors addressed to the server or an account are claimed and dropped here
unless a module waits for them.
"""

from __future__ import annotations

from ..events import StanzaEvent
from ..xml import local_name, namespace
from . import Module, hook


class IQ(Module):
    name = "iq"

    @hook("iq/host")
    @hook("iq/self")
    @hook("iq/bare")
    @hook("iq/service")
    async def dispatch(self, ev: StanzaEvent) -> bool | None:
        st = ev.stanza
        stype = st.get("type")
        if stype in ("get", "set") and len(st):
            payload = st[0]
            event = f"iq-{stype}/{ev.to_type}/{namespace(payload)}:{local_name(payload)}"
            bus = self.host.bus
            if bus.has(event):
                return bool(await bus.fire(event, ev)) or None
        return None
