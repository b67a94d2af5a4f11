"""Rules: what the protocols allow, as tables and pure functions.

A rules module holds no I/O and no server state: no sockets, no storage
calls, no asyncio, no host or session. It is given plain values (a stored
:class:`~vinespy.storage.Contact`, a node's config, an element) and answers
with values or a :class:`~vinespy.errors.StanzaError`, so it is tested
without a server (``tests/unit/test_*_rules.py``). The feature modules
(:mod:`vinespy.modules`) load the state, ask the rules and act on the answer.

* :mod:`~vinespy.rules.roster`: RFC 6121 subscription state machine
  (Appendix A) and roster-set checks;
* :mod:`~vinespy.rules.pubsub`: XEP-0060 affiliations, node configuration,
  errors and notifications;
* :mod:`~vinespy.rules.sm`: XEP-0198 counters, queue and resumption token;
* :mod:`~vinespy.rules.mam`: XEP-0313 queries, results and what is archived,
  XEP-0359 stanza ids, XEP-0441 preferences, on :mod:`~vinespy.rules.rsm`
  (XEP-0059 paging) and :mod:`~vinespy.rules.stamps` (XEP-0082 timestamps).
"""
