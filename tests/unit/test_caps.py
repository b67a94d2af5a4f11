"""XEP-0115 rules (vinespy/rules/caps.py): the examples of §5.2 and §5.3 with
their exact 'ver', the ill-formed answers of §5.4, and the ``<c/>`` parser."""

from __future__ import annotations

import pytest
from lxml import etree

from vinespy.rules import caps
from vinespy.rules.caps import Caps

DISCO = "http://jabber.org/protocol/disco#info"

SIMPLE = f"""<query xmlns='{DISCO}'
    node='http://code.google.com/p/exodus#QgayPKawpkPSDYmwT/WM94uAlu0='>
  <identity category='client' name='Exodus 0.9.1' type='pc'/>
  <feature var='http://jabber.org/protocol/caps'/>
  <feature var='http://jabber.org/protocol/disco#info'/>
  <feature var='http://jabber.org/protocol/disco#items'/>
  <feature var='http://jabber.org/protocol/muc'/>
</query>"""

COMPLEX = f"""<query xmlns='{DISCO}' node='http://psi-im.org#q07IKJEyjvHSyhy//CH0CxmKi8w='>
  <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>
  <identity xml:lang='el' category='client' name='Ψ 0.11' type='pc'/>
  <feature var='http://jabber.org/protocol/caps'/>
  <feature var='http://jabber.org/protocol/disco#info'/>
  <feature var='http://jabber.org/protocol/disco#items'/>
  <feature var='http://jabber.org/protocol/muc'/>
  <x xmlns='jabber:x:data' type='result'>
    <field var='FORM_TYPE' type='hidden'>
      <value>urn:xmpp:dataforms:softwareinfo</value>
    </field>
    <field var='ip_version'>
      <value>ipv4</value>
      <value>ipv6</value>
    </field>
    <field var='os'>
      <value>Mac</value>
    </field>
    <field var='os_version'>
      <value>10.5.1</value>
    </field>
    <field var='software'>
      <value>Psi</value>
    </field>
    <field var='software_version'>
      <value>0.11</value>
    </field>
  </x>
</query>"""


def q(text: str) -> etree._Element:
    return etree.fromstring(text)


def presence(c: str) -> etree._Element:
    return etree.fromstring(f"<presence xmlns='jabber:client'>{c}</presence>")


def test_simple_example_of_5_2() -> None:
    query = q(SIMPLE)
    assert caps.verification_string(query) == (
        "client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<"
        "http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<"
        "http://jabber.org/protocol/muc<")
    assert caps.ver_of(query) == "QgayPKawpkPSDYmwT/WM94uAlu0="
    c = Caps("sha-1", "http://code.google.com/p/exodus", "QgayPKawpkPSDYmwT/WM94uAlu0=")
    assert caps.verify(c, query) == frozenset({
        "http://jabber.org/protocol/caps", "http://jabber.org/protocol/disco#info",
        "http://jabber.org/protocol/disco#items", "http://jabber.org/protocol/muc"})


def test_complex_example_of_5_3() -> None:
    query = q(COMPLEX)
    assert caps.verification_string(query) == (
        "client/pc/el/Ψ 0.11<client/pc/en/Psi 0.11<http://jabber.org/protocol/caps<"
        "http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<"
        "http://jabber.org/protocol/muc<urn:xmpp:dataforms:softwareinfo<"
        "ip_version<ipv4<ipv6<os<Mac<os_version<10.5.1<software<Psi<software_version<0.11<")
    assert caps.ver_of(query) == "q07IKJEyjvHSyhy//CH0CxmKi8w="
    assert caps.verify(Caps("sha-1", "http://psi-im.org", "q07IKJEyjvHSyhy//CH0CxmKi8w="),
                       query) is not None


def test_order_of_the_answer_does_not_matter() -> None:
    shuffled = q(f"""<query xmlns='{DISCO}'>
      <feature var='http://jabber.org/protocol/muc'/>
      <feature var='http://jabber.org/protocol/disco#items'/>
      <identity category='client' name='Exodus 0.9.1' type='pc'/>
      <feature var='http://jabber.org/protocol/disco#info'/>
      <feature var='http://jabber.org/protocol/caps'/></query>""")
    assert caps.ver_of(shuffled) == "QgayPKawpkPSDYmwT/WM94uAlu0="


def test_other_hashes_by_iana_name() -> None:
    query = q(SIMPLE)
    ver = caps.ver_of(query, "sha-256")
    assert ver != caps.ver_of(query) and len(ver) == 44
    assert caps.verify(Caps("sha-256", "n", ver), query) is not None
    assert caps.verify(Caps("sha-1", "n", ver[:28]), query) is None


def test_a_lie_is_not_verified() -> None:
    """An answer with one feature more than 'ver' stands for: never trusted."""
    query = q(SIMPLE.replace("</query>", "<feature var='urn:xmpp:avatar:metadata+notify'/>"
                             "</query>"))
    assert caps.verify(Caps("sha-1", "n", "QgayPKawpkPSDYmwT/WM94uAlu0="), query) is None


@pytest.mark.parametrize("extra", [
    "<identity category='client' name='Exodus 0.9.1' type='pc'/>",      # §5.4 3.1
    "<feature var='http://jabber.org/protocol/muc'/>",                  # §5.4 3.2
])
def test_duplicates_make_the_answer_ill_formed(extra: str) -> None:
    query = q(SIMPLE.replace("</query>", extra + "</query>"))
    with pytest.raises(caps.Invalid):
        caps.verification_string(query)
    # Even when the 'ver' is that of the duplicated string itself.
    s = caps.verification_string(q(SIMPLE)) + ""
    assert caps.verify(Caps("sha-1", "n", caps.hash_string(s, "sha-1")), query) is None


def test_a_separator_inside_a_value_cannot_poison_the_cache() -> None:
    """Features {f1, f2} and the one feature "f1<f2" build the same S: the
    second answer would verify for the first's 'ver' and store features the
    client never listed. Any '<' in a part of S makes the answer ill-formed."""
    two = q(f"<query xmlns='{DISCO}'><feature var='f1'/><feature var='f2'/></query>")
    one = q(f"<query xmlns='{DISCO}'><feature var='f1&lt;f2'/></query>")
    ver = caps.ver_of(two)
    assert caps.verify(Caps("sha-1", "n", ver), two) == {"f1", "f2"}
    assert caps.verify(Caps("sha-1", "n", ver), one) is None
    with pytest.raises(caps.Invalid):
        caps.verification_string(one)


@pytest.mark.parametrize("query", [
    "<identity category='c&lt;' type='pc'/>",
    "<identity category='client' type='p&lt;c'/>",
    "<identity category='client' type='pc' xml:lang='e&lt;n'/>",
    "<identity category='client' type='pc' name='x&lt;f'/>",
    "<feature var='a&lt;b'/>",
    "<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'>"
    "<value>urn:x&lt;</value></field></x>",
    "<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'>"
    "<value>urn:x</value></field><field var='a&lt;b'><value>1</value></field></x>",
    "<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'>"
    "<value>urn:x</value></field><field var='a'><value>1&lt;2</value></field></x>",
])
def test_a_separator_anywhere_is_ill_formed(query: str) -> None:
    with pytest.raises(caps.Invalid):
        caps.verification_string(q(f"<query xmlns='{DISCO}'>{query}</query>"))


def form(form_type: str, *, kind: str = "hidden", values: tuple[str, ...] = ()) -> str:
    vals = "".join(f"<value>{v}</value>" for v in (values or (form_type,)))
    return (f"<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='{kind}'>"
            f"{vals}</field><field var='a'><value>1</value></field></x>")


def test_two_forms_of_one_form_type_are_ill_formed() -> None:
    query = q(SIMPLE.replace("</query>", form("urn:x") + form("urn:x") + "</query>"))
    with pytest.raises(caps.Invalid):
        caps.verification_string(query)


def test_a_form_type_with_two_values_is_ill_formed() -> None:
    query = q(SIMPLE.replace("</query>", form("urn:x", values=("urn:x", "urn:y")) + "</query>"))
    with pytest.raises(caps.Invalid):
        caps.verification_string(query)


def test_forms_without_a_hidden_form_type_are_left_out() -> None:
    """§5.4 3.4: ignored, processing goes on (the hash is that of the rest)."""
    query = q(SIMPLE.replace("</query>", form("urn:x", kind="text-single")
                             + "<x xmlns='jabber:x:data' type='result'><field var='a'>"
                             "<value>1</value></field></x></query>"))
    assert caps.ver_of(query) == "QgayPKawpkPSDYmwT/WM94uAlu0="


def test_identities_sorted_as_joined_strings_are_accepted() -> None:
    """§5.1 sorts by category then type...; some clients sort the joined
    strings: 'a-b/x//' before 'a/x//'. Both orders verify."""
    query = q(f"<query xmlns='{DISCO}'><identity category='a' type='x'/>"
              f"<identity category='a-b' type='x'/><feature var='f'/></query>")
    xep = caps.verification_string(query)
    joined = caps.verification_string(query, joined=True)
    assert xep == "a/x//<a-b/x//<f<" and joined == "a-b/x//<a/x//<f<"
    for s in (xep, joined):
        assert caps.verify(Caps("sha-1", "n", caps.hash_string(s, "sha-1")), query) == {"f"}


def test_parse_hashed_caps() -> None:
    c = caps.parse(presence(f"<c xmlns='{caps.CAPS}' hash='sha-1' node='http://psi-im.org' "
                            "ver='q07IKJEyjvHSyhy//CH0CxmKi8w='/>"))
    assert c == Caps("sha-1", "http://psi-im.org", "q07IKJEyjvHSyhy//CH0CxmKi8w=")
    assert c.disco_node == "http://psi-im.org#q07IKJEyjvHSyhy//CH0CxmKi8w="
    assert c.key == ("sha-1", "q07IKJEyjvHSyhy//CH0CxmKi8w=")


@pytest.mark.parametrize("c", [
    "",                                                                      # none
    f"<c xmlns='{caps.CAPS}' node='http://exodus' ver='0.9' ext='xhtml'/>",  # legacy
    f"<c xmlns='{caps.CAPS}' hash='md5' node='n' ver='1B2M2Y8AsgTpgAmY7PhCfg=='/>",
    f"<c xmlns='{caps.CAPS}' hash='sha-1' node='n' ver='not base64!'/>",
    f"<c xmlns='{caps.CAPS}' hash='sha-1' node='n' ver='AAAA'/>",            # wrong length
    f"<c xmlns='{caps.CAPS}' hash='sha-1' ver='q07IKJEyjvHSyhy//CH0CxmKi8w='/>",  # no node
    "<c xmlns='urn:other' hash='sha-1' node='n' ver='q07IKJEyjvHSyhy//CH0CxmKi8w='/>",
])
def test_caps_that_are_unknown(c: str) -> None:
    assert caps.parse(presence(c)) is None


def test_counts_and_wants() -> None:
    assert caps.counts(q(COMPLEX)) == (2, 4, 6)
    features = frozenset({"urn:xmpp:avatar:metadata+notify"})
    assert caps.wants(features, "urn:xmpp:avatar:metadata")
    assert not caps.wants(features, "urn:xmpp:avatar:data")
    assert not caps.wants(None, "urn:xmpp:avatar:metadata")
