"""XEP-0313/0059/0359/0334/0441/0082 rules without I/O (vinespy/rules/mam.py,
rsm.py, stamps.py)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from lxml import etree

from vinespy import ns
from vinespy.errors import StanzaError
from vinespy.jid import JID
from vinespy.rules import mam, rsm, stamps
from vinespy.rules.mam import MamQuery, Prefs
from vinespy.xml import Element, parse_stanza, serialize

UTC = timezone.utc
JULIET = JID.parse("juliet@capulet.lit")
ROMEO = JID.parse("romeo@montague.lit")


def xml(text: str) -> Element:
    return etree.fromstring(text)


def query(*fields: tuple[str, str | list[str]], rsm_xml: str = "", extra: str = "",
          form_type: str = ns.MAM, attrs: str = "") -> Element:
    body = ""
    if fields or form_type != ns.MAM:
        values = "".join(
            f"<field var='{var}'>" + "".join(f"<value>{v}</value>"
                                             for v in ([val] if isinstance(val, str) else val))
            + "</field>" for var, val in fields)
        body = (f"<x xmlns='{ns.DATA}' type='submit'><field var='FORM_TYPE' type='hidden'>"
                f"<value>{form_type}</value></field>{values}</x>")
    if rsm_xml:
        body += f"<set xmlns='{ns.RSM}'>{rsm_xml}</set>"
    return xml(f"<query xmlns='{ns.MAM}' {attrs}>{body}{extra}</query>")


def condition(exc: pytest.ExceptionInfo[StanzaError]) -> str:
    return exc.value.condition


# -- XEP-0082 ------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("1969-07-21T02:56:15Z", datetime(1969, 7, 21, 2, 56, 15, tzinfo=UTC)),
    ("1969-07-20T21:56:15-05:00", datetime(1969, 7, 21, 2, 56, 15, tzinfo=UTC)),
    ("2010-06-07T00:00:00+02:30", datetime(2010, 6, 6, 21, 30, tzinfo=UTC)),
    ("2010-06-07T00:00:00.5Z", datetime(2010, 6, 7, 0, 0, 0, 500000, tzinfo=UTC)),
    ("2010-06-07T00:00:00.123456789Z", datetime(2010, 6, 7, 0, 0, 0, 123456, tzinfo=UTC)),
])
def test_datetime_profile_parses_to_aware_utc(text: str, expected: datetime) -> None:
    got = stamps.parse_datetime(text)
    assert got == expected and got.tzinfo == UTC


@pytest.mark.parametrize("text", [
    "2010-06-07T00:00:00",          # the time zone is mandatory (XEP-0082 §3.2)
    "2010-06-07", "2010-06-07 00:00:00Z", "20100607T00:00:00Z", "2010-06-07T00:00Z",
    "2010-13-07T00:00:00Z", "2010-06-07T24:00:00Z", "2010-06-07T00:00:00+25:00",
    "2010-06-07t00:00:00z", "", "yesterday", "２０１０-06-07T00:00:00Z",
])
def test_datetime_profile_refuses_other_forms(text: str) -> None:
    with pytest.raises(ValueError):
        stamps.parse_datetime(text)


def test_a_missing_zone_may_be_taken_as_utc() -> None:
    assert stamps.parse_datetime("2010-06-07T01:02:03", assume_utc=True) == datetime(
        2010, 6, 7, 1, 2, 3, tzinfo=UTC)
    assert stamps.parse_datetime("2010-06-07T01:02:03+01:00", assume_utc=True) == datetime(
        2010, 6, 7, 0, 2, 3, tzinfo=UTC)
    with pytest.raises(ValueError):
        stamps.parse_datetime("2010-06-07", assume_utc=True)


def test_datetime_formats_in_utc_with_z() -> None:
    plus2 = timezone(timedelta(hours=2))
    assert stamps.format_datetime(datetime(2010, 7, 11, 1, 8, 25, tzinfo=plus2)) == (
        "2010-07-10T23:08:25Z")
    when = datetime(2010, 7, 10, 23, 8, 25, 120000, tzinfo=UTC)
    assert stamps.format_datetime(when) == "2010-07-10T23:08:25.120000Z"
    assert stamps.parse_datetime(stamps.format_datetime(when)) == when
    with pytest.raises(ValueError):
        stamps.format_datetime(datetime(2010, 7, 10))


# -- XEP-0059 ------------------------------------------------------------------------

def rset(inner: str) -> Element:
    return xml(f"<set xmlns='{ns.RSM}'>{inner}</set>")


def test_rsm_defaults_and_caps() -> None:
    assert rsm.parse_set(None, default=50, limit=250) == rsm.Rsm(max=50)
    assert rsm.parse_set(None, default=500, limit=250).max == 250
    assert rsm.parse_set(rset("<max>10</max>"), default=50, limit=250).max == 10
    assert rsm.parse_set(rset("<max> 1000 </max>"), default=50, limit=250).max == 250
    assert rsm.parse_set(rset("<max>" + "9" * 5000 + "</max>"), default=50, limit=250).max == 250
    assert rsm.parse_set(rset("<max>0</max>"), default=50, limit=250).max == 0   # count only


def test_rsm_cursors() -> None:
    after = rsm.parse_set(rset("<max>10</max><after>09af3</after>"), default=50, limit=250)
    assert (after.after, after.before, after.backward) == ("09af3", None, False)
    before = rsm.parse_set(rset("<before>28482</before>"), default=50, limit=250)
    assert (before.before, before.backward) == ("28482", True)
    last = rsm.parse_set(rset("<max>10</max><before/>"), default=50, limit=250)
    assert (last.before, last.backward) == ("", True)      # the last page (§2.5)


@pytest.mark.parametrize("inner, cond", [
    ("<max>-1</max>", "bad-request"), ("<max>ten</max>", "bad-request"),
    ("<max>1.5</max>", "bad-request"), ("<max/>", "bad-request"),
    ("<max>١٠</max>", "bad-request"),
    ("<after/>", "bad-request"),
    ("<after>a</after><before>b</before>", "bad-request"),
    ("<after>a</after><before/>", "bad-request"),
    ("<max>10</max><index>371</index>", "feature-not-implemented"),
])
def test_rsm_errors(inner: str, cond: str) -> None:
    with pytest.raises(StanzaError) as exc:
        rsm.parse_set(rset(inner), default=50, limit=250)
    assert condition(exc) == cond


def test_rsm_answer_set() -> None:
    s = rsm.set_element("a", "b", count=20, index=0)
    assert serialize(s) == (f'<set xmlns="{ns.RSM}"><first index="0">a</first><last>b</last>'
                            f'<count>20</count></set>').encode()
    assert serialize(rsm.set_element(count=7)) == (
        f'<set xmlns="{ns.RSM}"><count>7</count></set>').encode()    # empty page (§2.2)
    with pytest.raises(ValueError):
        rsm.set_element("a")


def test_trim_reads_one_more_to_know_the_end() -> None:
    forward = rsm.Rsm(max=3, after="x")
    assert rsm.trim([1, 2, 3, 4], forward) == ([1, 2, 3], False)
    assert rsm.trim([1, 2, 3], forward) == ([1, 2, 3], True)
    assert rsm.trim([], forward) == ([], True)
    backward = rsm.Rsm(max=3, before="")      # read newest first, sent oldest first
    assert rsm.trim([9, 8, 7, 6], backward) == ([7, 8, 9], False)
    assert rsm.trim([9, 8], backward) == ([8, 9], True)
    assert rsm.trim([1, 2], rsm.Rsm(max=0)) == ([], False)


# -- queries -------------------------------------------------------------------------

def test_an_empty_query_is_everything_a_page_at_a_time() -> None:
    q = mam.parse_query(xml(f"<query xmlns='{ns.MAM}' queryid='f27'/>"))
    assert q == MamQuery(rsm=rsm.Rsm(max=mam.DEFAULT_PAGE), queryid="f27")
    assert mam.parse_query(xml(f"<query xmlns='{ns.MAM}'/>")).queryid is None


def test_every_field() -> None:
    q = mam.parse_query(query(
        ("with", "juliet@capulet.lit"), ("start", "2010-06-07T00:00:00Z"),
        ("end", "2010-07-07T13:23:54+02:00"), ("after-id", "28482"), ("before-id", "09af3"),
        ("ids", ["a", "b", "a", ""]),
        rsm_xml="<max>10</max><after>5d398</after>", extra="<flip-page/>",
        attrs="queryid='q1'"))
    assert q.with_jid == JULIET
    assert q.start == datetime(2010, 6, 7, tzinfo=UTC)
    assert q.end == datetime(2010, 7, 7, 11, 23, 54, tzinfo=UTC)
    assert (q.after_id, q.before_id, q.ids) == ("28482", "09af3", ("a", "b"))
    assert q.rsm == rsm.Rsm(max=10, after="5d398")
    assert (q.flip, q.queryid) == (True, "q1")


def test_with_keeps_its_resource_and_empty_values_filter_nothing() -> None:
    q = mam.parse_query(query(("with", "romeo@montague.lit/orchard"), ("start", "")))
    assert q.with_jid == JID.parse("romeo@montague.lit/orchard") and not q.with_jid.is_bare
    assert q.start is None
    assert mam.parse_query(query()).with_jid is None        # a form with FORM_TYPE alone


def test_a_query_slixmpp_builds() -> None:
    """What a real client library sends (slixmpp's XEP-0313 and XEP-0059
    stanzas), naive end time included: taken as UTC."""
    slixmpp = pytest.importorskip("slixmpp")
    from slixmpp.plugins.xep_0004 import Form
    from slixmpp.plugins.xep_0059 import Set
    from slixmpp.plugins.xep_0313.stanza import MAM
    slixmpp.register_stanza_plugin(slixmpp.Iq, MAM)
    slixmpp.register_stanza_plugin(MAM, Form)
    slixmpp.register_stanza_plugin(MAM, Set)
    iq = slixmpp.Iq(stype="set")
    iq["mam"]["queryid"] = "q1"
    iq["mam"]["start"] = datetime(2010, 6, 7, 1, 2, 3, 450000, tzinfo=UTC)
    iq["mam"]["end"] = datetime(2010, 7, 7)
    iq["mam"]["with"] = "juliet@capulet.lit"
    iq["mam"]["ids"] = ["a", "b"]
    iq["mam"]["after_id"] = "x"
    iq["mam"]["rsm"]["max"] = "10"
    iq["mam"]["rsm"]["before"] = True
    q = mam.parse_query(xml(str(iq))[0])
    assert q == MamQuery(rsm=rsm.Rsm(max=10, before=""), queryid="q1", with_jid=JULIET,
                         start=datetime(2010, 6, 7, 1, 2, 3, 450000, tzinfo=UTC),
                         end=datetime(2010, 7, 7, tzinfo=UTC), after_id="x", ids=("a", "b"))


def test_the_page_is_capped_at_the_servers_limit() -> None:
    assert mam.parse_query(query(rsm_xml="<max>100000</max>")).rsm.max == mam.MAX_PAGE
    assert mam.parse_query(query(rsm_xml="<max>7</max>"), limit=5).rsm.max == 5
    assert mam.parse_query(query(), default=20).rsm.max == 20
    assert mam.parse_query(query(rsm_xml="<before/>")).rsm.backward


@pytest.mark.parametrize("q, cond", [
    # §4.1.5: an unknown field is feature-not-implemented
    (query(("{urn:example}free-text", "x")), "feature-not-implemented"),
    (query(("include-groupchat", "true")), "feature-not-implemented"),
    # malformed values
    (query(("with", "@capulet.lit")), "bad-request"),
    (query(("with", "juliet@")), "bad-request"),
    (query(("start", "2010-06-07")), "bad-request"),
    (query(("end", "2010-06-07T00:00:00+24:00")), "bad-request"),
    (query(("with", ["a@b", "c@d"])), "bad-request"),
    (query(("after-id", ["1", "2"])), "bad-request"),
    # the form itself
    (query(form_type="jabber:iq:search"), "bad-request"),
    (xml(f"<query xmlns='{ns.MAM}'><x xmlns='{ns.DATA}' type='submit'>"
         f"<field var='with'><value>a@b</value></field></x></query>"), "bad-request"),
    (xml(f"<query xmlns='{ns.MAM}'><x xmlns='{ns.DATA}' type='form'><field var='FORM_TYPE'>"
         f"<value>{ns.MAM}</value></field></x></query>"), "bad-request"),
    (xml(f"<query xmlns='{ns.MAM}'><x xmlns='{ns.DATA}' type='submit'><field var='FORM_TYPE'>"
         f"<value>{ns.MAM}</value></field><field><value>1</value></field></x></query>"),
     "bad-request"),
    (xml(f"<query xmlns='{ns.MAM}'><x xmlns='{ns.DATA}' type='submit'><field var='FORM_TYPE'>"
         f"<value>{ns.MAM}</value></field><field var='with'/><field var='with'/></x></query>"),
     "bad-request"),
    (xml(f"<query xmlns='{ns.MAM}'><x xmlns='{ns.DATA}' type='submit'/>"
         f"<x xmlns='{ns.DATA}' type='submit'/></query>"), "bad-request"),
    (xml("<query xmlns='urn:xmpp:mam:1'/>"), "bad-request"),
    # RSM
    (query(rsm_xml="<index>3</index>"), "feature-not-implemented"),
    (query(rsm_xml="<max>x</max>"), "bad-request"),
    (query(rsm_xml="<after>a</after><before>b</before>"), "bad-request"),
    # XEP-0442 node archives
    (query(attrs="node='urn:xmpp:microblog:0'"), "feature-not-implemented"),
])
def test_query_errors(q: Element, cond: str) -> None:
    with pytest.raises(StanzaError) as exc:
        mam.parse_query(q)
    assert condition(exc) == cond


def test_too_many_ids() -> None:
    with pytest.raises(StanzaError) as exc:
        mam.parse_query(query(("ids", [str(i) for i in range(mam.MAX_IDS + 1)])))
    assert condition(exc) == "policy-violation"


def test_the_advertised_form_lists_what_a_query_accepts() -> None:
    """§4.1.5: every field served, types fixed for with/start/end, ids open
    (XEP-0122), none required; a form filled from it parses."""
    q = mam.query_form()
    x = q.find(f"{{{ns.DATA}}}x")
    assert x is not None and x.get("type") == "form"
    fields = {f.get("var"): f for f in x.findall(f"{{{ns.DATA}}}field")}
    assert set(fields) == {"FORM_TYPE", "with", "start", "end", "before-id", "after-id", "ids"}
    assert [v.text for v in fields["FORM_TYPE"].findall(f"{{{ns.DATA}}}value")] == [ns.MAM]
    assert (fields["with"].get("type"), fields["start"].get("type"),
            fields["end"].get("type"), fields["ids"].get("type")) == (
        "jid-single", "text-single", "text-single", "list-multi")
    assert fields["ids"].find(f"{{{ns.XDATA_VALIDATE}}}validate/{{{ns.XDATA_VALIDATE}}}open") \
        is not None
    assert x.find(f".//{{{ns.DATA}}}required") is None
    assert fields["ids"].find(f"{{{ns.DATA}}}option") is None
    # Filled in and submitted, it is a valid query.
    x.set("type", "submit")
    fields["with"].append(xml(f"<value xmlns='{ns.DATA}'>juliet@capulet.lit</value>"))
    assert mam.parse_query(q).with_jid == JULIET


# -- replies -------------------------------------------------------------------------

MESSAGE = (b"<message from='romeo@montague.lit/orchard' to='juliet@capulet.lit/balcony'"
           b" type='chat' id='8a54s'><body>Call me but love</body></message>")


def test_a_result_round_trips() -> None:
    original = parse_stanza(MESSAGE)
    before = etree.tostring(original)
    when = datetime(2010, 7, 10, 23, 8, 25, tzinfo=UTC)
    out = mam.result_message(JID.parse("juliet@capulet.lit/chamber"), "f27", "28482-98726",
                             when, original, frm=JULIET, id="aeb213")
    data = serialize(out)
    assert data == (
        b"<message to='juliet@capulet.lit/chamber' from='juliet@capulet.lit' id='aeb213'>"
        .replace(b"'", b'"')
        + f'<result xmlns="{ns.MAM}" id="28482-98726" queryid="f27">'
          f'<forwarded xmlns="{ns.FORWARD}"><delay xmlns="{ns.DELAY}" '
          f'stamp="2010-07-10T23:08:25Z"/>'.encode()
        # Inside <forwarded/> the message declares jabber:client (XEP-0297 §3.2).
        + serialize(parse_stanza(MESSAGE)).replace(b"<message ",
                                                   b'<message xmlns="jabber:client" ', 1)
        + b"</forwarded></result></message>")
    # What a client reads back out of it.
    back = parse_stanza(data)
    result = back.find(f"{{{ns.MAM}}}result")
    assert result is not None and (result.get("queryid"), result.get("id")) == (
        "f27", "28482-98726")
    delay = result.find(f"{{{ns.FORWARD}}}forwarded/{{{ns.DELAY}}}delay")
    assert delay is not None and stamps.parse_datetime(delay.get("stamp", "")) == when
    inner = result.find(f"{{{ns.FORWARD}}}forwarded/{{{ns.CLIENT}}}message")
    assert inner is not None and etree.tostring(inner) == before
    assert original.getparent() is not None         # moved in, not copied (a page's worth)


def test_a_result_without_queryid() -> None:
    out = mam.result_message("juliet@capulet.lit/chamber", None, "1",
                             datetime(2010, 7, 10, tzinfo=UTC), parse_stanza(MESSAGE))
    result = out.find(f"{{{ns.MAM}}}result")
    assert result is not None and "queryid" not in result.attrib
    assert out.get("from") is None
    with pytest.raises(ValueError):     # the namespace of the stanza is kept (XEP-0297 §3.2)
        mam.result_message("a@b/c", None, "1", datetime(2010, 7, 10, tzinfo=UTC),
                           xml("<message xmlns='urn:xmpp:forward:0'/>"))


def test_fin() -> None:
    done = mam.fin(True, "23452-4534-1", "390-2342-22", 16, index=0)
    assert serialize(done) == (
        f'<fin xmlns="{ns.MAM}" complete="true"><set xmlns="{ns.RSM}">'
        f'<first index="0">23452-4534-1</first><last>390-2342-22</last><count>16</count>'
        f'</set></fin>').encode()
    more = mam.fin(False, "a", "b")
    assert "complete" not in more.attrib and "stable" not in more.attrib
    assert mam.fin(True, stable=False).get("stable") == "false"
    empty = mam.fin(True)
    assert [etree.QName(c).localname for c in empty[0]] == []   # no first/last (XEP-0059 §2.2)


def test_metadata() -> None:
    a = datetime(2008, 8, 22, 21, 9, 4, tzinfo=UTC)
    b = datetime(2020, 4, 20, 14, 34, 21, tzinfo=UTC)
    m = mam.metadata(("YWxwaGEg", a), ("b21lZ2Eg", b))
    assert serialize(m) == (
        f'<metadata xmlns="{ns.MAM}"><start id="YWxwaGEg" timestamp="2008-08-22T21:09:04Z"/>'
        f'<end id="b21lZ2Eg" timestamp="2020-04-20T14:34:21Z"/></metadata>').encode()
    assert len(mam.metadata(None, None)) == 0


def test_features() -> None:
    assert mam.FEATURES == ("urn:xmpp:mam:2", "urn:xmpp:mam:2#extended", "urn:xmpp:sid:0")


# -- what is archived ----------------------------------------------------------------

def msg(inner: str = "<body>hi</body>", type: str | None = "chat") -> Element:
    t = f" type='{type}'" if type is not None else ""
    return parse_stanza(f"<message from='romeo@montague.lit/o' to='juliet@capulet.lit'{t}>"
                        f"{inner}</message>".encode())


HINT = f"xmlns='{ns.HINTS}'"
AXOLOTL = "eu.siacs.conversations.axolotl"


@pytest.mark.parametrize("inner, type, archived", [
    ("<body>hi</body>", "chat", True),
    ("<body>hi</body>", None, True),                     # type defaults to normal
    ("<body>hi</body>", "normal", True),
    ("<body>hi</body>", "headline", False),
    ("<body>hi</body>", "groupchat", False),
    ("<body>hi</body>", "error", False),
    ("<subject>plans</subject>", "chat", True),
    # state changes: not conversation (§3)
    ("<active xmlns='http://jabber.org/protocol/chatstates'/>", "chat", False),
    ("<received xmlns='urn:xmpp:receipts' id='x'/>", "chat", False),
    ("<paused xmlns='http://jabber.org/protocol/chatstates'/>", None, False),
    # chat markers: read state clients sync from the archive (XEP-0333)
    ("<displayed xmlns='urn:xmpp:chat-markers:0' id='x'/>", "chat", True),
    ("<received xmlns='urn:xmpp:chat-markers:0' id='x'/>", "chat", True),
    ("<acknowledged xmlns='urn:xmpp:chat-markers:0' id='x'/>", None, True),
    ("<markable xmlns='urn:xmpp:chat-markers:0'/>", "chat", False),     # a request alone
    ("<displayed xmlns='urn:xmpp:chat-markers:0' id='x'/>", "headline", False),
    ("", "chat", False),
    # XEP-0334 hints
    (f"<body>hi</body><no-store {HINT}/>", "chat", False),
    (f"<body>hi</body><no-permanent-store {HINT}/>", "chat", False),
    (f"<store {HINT}/>", "chat", True),
    (f"<store {HINT}/><no-store {HINT}/>", "chat", False),
    (f"<store {HINT}/>", "headline", True),
    (f"<store {HINT}/>", "error", False),
    (f"<body>hi</body><store {HINT}/>", "groupchat", False),
    # encrypted payloads without a body
    (f"<encrypted xmlns='{AXOLOTL}'><header sid='1'/><payload>AAA=</payload></encrypted>",
     "chat", True),
    (f"<encrypted xmlns='{AXOLOTL}'><header sid='1'/></encrypted>", "chat", False),  # key transport
    ("<encrypted xmlns='urn:xmpp:omemo:2'><header sid='1'/><payload>A</payload></encrypted>",
     "chat", True),
    ("<openpgp xmlns='urn:xmpp:openpgp:0'>BASE64</openpgp>", "chat", True),
    ("<x xmlns='jabber:x:conference' jid='room@muc.lit'/>", None, True),
    ("<x xmlns='http://jabber.org/protocol/muc#user'><invite from='a@b'/></x>", None, True),
    ("<x xmlns='http://jabber.org/protocol/muc#user'/>", "chat", False),
    ("<propose xmlns='urn:xmpp:jingle-message:0' id='c'/>", "chat", True),
    ("<propose xmlns='urn:xmpp:jingle-message:1' id='c'/>", "chat", True),
    ("<finish xmlns='urn:xmpp:jingle-message:1' id='c'/>", "chat", True),
    ("<reactions xmlns='urn:xmpp:reactions:0' id='m'/>", "chat", True),
])
def test_should_archive(inner: str, type: str | None, archived: bool) -> None:
    m = msg(inner, type)
    assert mam.should_archive(m) is archived
    assert (mam.archive_reason(m) is not None) is archived


# -- stanza ids (XEP-0359) -----------------------------------------------------------

def test_stamp_replaces_a_forged_id_and_keeps_the_others() -> None:
    m = msg(f"<body>hi</body>"
            f"<stanza-id xmlns='{ns.SID}' by='Juliet@Capulet.lit' id='forged'/>"
            f"<stanza-id xmlns='{ns.SID}' by='juliet@capulet.lit' id='forged2'/>"
            f"<stanza-id xmlns='{ns.SID}' by='romeo@montague.lit' id='theirs'/>"
            f"<origin-id xmlns='{ns.SID}' id='client-made'/>")
    assert mam.stamp_stanza_id(m, JULIET, "28482-98726") is m
    ids = [(e.get("by"), e.get("id")) for e in m.findall(f"{{{ns.SID}}}stanza-id")]
    assert ids == [("romeo@montague.lit", "theirs"), ("juliet@capulet.lit", "28482-98726")]
    assert mam.stanza_id(m, JULIET) == "28482-98726"
    assert mam.stanza_id(m, ROMEO) == "theirs"
    assert mam.origin_id(m) == "client-made"        # preserved (XEP-0359 §2.2)
    assert b"<stanza-id xmlns=\"urn:xmpp:sid:0\" by=\"juliet@capulet.lit\" id=\"28482-98726\"/>" \
        in serialize(m)


def test_strip_without_stamping() -> None:
    """Rule 2: delete ours even when not adding one (a message not archived)."""
    m = msg(f"<body>hi</body><stanza-id xmlns='{ns.SID}' by='juliet@capulet.lit' id='f'/>"
            f"<stanza-id xmlns='{ns.SID}' by='not a jid@' id='x'/>")
    assert mam.strip_stanza_ids(m, JULIET) == 1
    assert mam.stanza_id(m, JULIET) is None
    assert len(m.findall(f"{{{ns.SID}}}stanza-id")) == 1
    assert mam.origin_id(m) is None
    assert mam.strip_stanza_ids(m, JULIET) == 0


# -- preferences (XEP-0441) ----------------------------------------------------------

def prefs_xml(default: str | None = "roster", always: tuple[str, ...] = (),
              never: tuple[str, ...] = (), lists: bool = True) -> Element:
    d = f" default='{default}'" if default is not None else ""
    inner = ""
    if lists:
        inner = ("<always>" + "".join(f"<jid>{j}</jid>" for j in always) + "</always><never>"
                 + "".join(f"<jid>{j}</jid>" for j in never) + "</never>")
    return xml(f"<prefs xmlns='{ns.MAM}'{d}>{inner}</prefs>")


def test_prefs_round_trip() -> None:
    p = mam.parse_prefs(prefs_xml("roster", ("romeo@montague.lit",),
                                  ("montague@montague.lit", "tybalt@capulet.lit/sword")))
    assert p == Prefs("roster", frozenset({ROMEO}),
                      frozenset({JID.parse("montague@montague.lit"),
                                 JID.parse("tybalt@capulet.lit/sword")}))
    el = mam.prefs_element(p)
    assert serialize(el) == (
        f'<prefs xmlns="{ns.MAM}" default="roster"><always><jid>romeo@montague.lit</jid>'
        f'</always><never><jid>montague@montague.lit</jid><jid>tybalt@capulet.lit/sword</jid>'
        f'</never></prefs>').encode()
    assert mam.parse_prefs(el) == p


def test_prefs_lists_are_present_even_empty_and_optional_in_a_set() -> None:
    assert serialize(mam.prefs_element(Prefs())) == (
        f'<prefs xmlns="{ns.MAM}" default="always"><always/><never/></prefs>').encode()
    assert mam.parse_prefs(prefs_xml("never", lists=False)) == Prefs("never")


def test_a_jid_in_both_lists_is_never() -> None:
    p = mam.parse_prefs(prefs_xml("always", ("romeo@montague.lit",), ("romeo@montague.lit",)))
    assert p.always == frozenset() and p.never == frozenset({ROMEO})


@pytest.mark.parametrize("el, cond", [
    (prefs_xml(None), "bad-request"),
    (prefs_xml("sometimes"), "bad-request"),
    (prefs_xml("always", ("@nowhere",)), "jid-malformed"),
    (prefs_xml("always", never=("a@b/",)), "jid-malformed"),
    (prefs_xml("always", tuple(f"u{i}@x.lit" for i in range(3))), "policy-violation"),
    (xml(f"<pref xmlns='{ns.MAM}' default='always'/>"), "bad-request"),
])
def test_prefs_errors(el: Element, cond: str) -> None:
    with pytest.raises(StanzaError) as exc:
        mam.parse_prefs(el, max_jids=2)
    assert condition(exc) == cond


def test_prefs_refuse_an_unknown_default() -> None:
    with pytest.raises(ValueError):
        Prefs("sometimes")


@pytest.mark.parametrize("peer, in_roster, archived", [
    ("romeo@montague.lit/orchard", False, True),      # always, bare entry: any resource
    ("romeo@montague.lit", False, True),
    ("tybalt@capulet.lit/sword", True, False),        # never, full entry: that resource...
    ("tybalt@capulet.lit/dagger", True, True),        # ...only (then roster: in it)
    ("tybalt@capulet.lit", False, False),             # the bare JID is not that resource
    ("montague@montague.lit/x", True, False),         # never wins over the roster
    ("nurse@capulet.lit", True, True),                # default roster
    ("nurse@capulet.lit/kitchen", False, False),
])
def test_decide(peer: str, in_roster: bool, archived: bool) -> None:
    p = Prefs("roster", frozenset({ROMEO}),
              frozenset({JID.parse("montague@montague.lit"),
                         JID.parse("tybalt@capulet.lit/sword")}))
    assert mam.decide(p, JID.parse(peer), in_roster) is archived


def test_decide_defaults() -> None:
    peer = JID.parse("nurse@capulet.lit")
    assert mam.decide(Prefs("always"), peer, False) is True
    assert mam.decide(Prefs("never"), peer, True) is False
    assert mam.decide(Prefs("never", always=frozenset({peer})), peer, False) is True


# -- 'with' (§4.1.1) -----------------------------------------------------------------

def test_peer_is_the_remote_end() -> None:
    out = parse_stanza(b"<message from='juliet@capulet.lit/balcony' to='romeo@montague.lit/o'/>")
    inc = parse_stanza(b"<message from='romeo@montague.lit/o' to='juliet@capulet.lit'/>")
    me = parse_stanza(b"<message from='juliet@capulet.lit/a' to='juliet@capulet.lit/b'/>")
    assert mam.peer(JULIET, out) == JID.parse("romeo@montague.lit/o")
    assert mam.peer(JULIET, inc) == JID.parse("romeo@montague.lit/o")
    assert mam.peer(JULIET, me) == JID.parse("juliet@capulet.lit/b")
    assert mam.peer(JULIET, parse_stanza(b"<message to='juliet@capulet.lit'/>")) is None
    assert mam.peer(JULIET, parse_stanza(b"<message from='juliet@capulet.lit'/>")) is None


@pytest.mark.parametrize("with_jid, remote, matches", [
    ("romeo@montague.lit", "romeo@montague.lit/orchard", True),     # bare: any resource
    ("romeo@montague.lit", "romeo@montague.lit", True),
    ("romeo@montague.lit/orchard", "romeo@montague.lit/orchard", True),
    ("romeo@montague.lit/orchard", "romeo@montague.lit/garden", False),
    ("romeo@montague.lit/orchard", "romeo@montague.lit", False),
    ("montague.lit", "romeo@montague.lit", False),
    ("juliet@capulet.lit", "juliet@capulet.lit/b", True),           # to self only
    ("juliet@capulet.lit", "romeo@montague.lit", False),
])
def test_with_matches(with_jid: str, remote: str, matches: bool) -> None:
    assert mam.with_matches(JID.parse(with_jid), JID.parse(remote)) is matches


def test_slixmpp_reads_our_replies() -> None:
    """A result, a fin and metadata as slixmpp's XEP-0313 client decodes them."""
    slixmpp = pytest.importorskip("slixmpp")
    from slixmpp.plugins.xep_0059 import Set
    from slixmpp.plugins.xep_0203.stanza import Delay
    from slixmpp.plugins.xep_0297.stanza import Forwarded
    from slixmpp.plugins.xep_0313 import stanza as st
    reg = slixmpp.register_stanza_plugin
    reg(slixmpp.Message, st.Result)
    reg(st.Result, Forwarded)
    reg(Forwarded, slixmpp.Message, iterable=True)
    reg(Forwarded, Delay)
    reg(slixmpp.Iq, st.Fin)
    reg(st.Fin, Set)
    reg(slixmpp.Iq, st.Metadata)
    reg(st.Metadata, st.Start)
    reg(st.Metadata, st.End)
    when = datetime(2010, 7, 10, 23, 8, 25, tzinfo=UTC)
    out = mam.result_message("juliet@capulet.lit/chamber", "f27", "28482", when,
                             parse_stanza(MESSAGE), frm=JULIET)
    m = slixmpp.Message(xml=parse_stanza(serialize(out)))
    assert (m["mam_result"]["queryid"], m["mam_result"]["id"]) == ("f27", "28482")
    fwd = m["mam_result"]["forwarded"]
    assert fwd["delay"]["stamp"] == when
    assert fwd["stanza"]["body"] == "Call me but love"
    assert fwd["stanza"]["from"] == "romeo@montague.lit/orchard"

    iq = etree.fromstring(b"<iq xmlns='jabber:client' type='result' id='q'/>")
    iq.append(mam.fin(True, "a", "b", 2))
    fin = slixmpp.Iq(xml=etree.fromstring(etree.tostring(iq)))["mam_fin"]
    assert fin["complete"] in (True, "true")
    assert (fin["rsm"]["first"], fin["rsm"]["last"], fin["rsm"]["count"]) == ("a", "b", "2")

    iq = etree.fromstring(b"<iq xmlns='jabber:client' type='result' id='m'/>")
    iq.append(mam.metadata(("a", when), ("b", when)))
    meta = slixmpp.Iq(xml=etree.fromstring(etree.tostring(iq)))["mam_metadata"]
    assert (meta["start"]["id"], meta["start"]["timestamp"], meta["end"]["id"]) == (
        "a", when, "b")
