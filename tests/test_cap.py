"""CAP 1.2 documents: the corpus in tests/cap/valid reads and writes back faithfully, each file in
tests/cap/invalid is refused at the XPath of its fault, and unsafe XML is refused before it is read."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import pathlib
import subprocess
import sys
import time
from xml.etree import ElementTree as ET

import pytest
from lxml import etree

from alertd import cap, errors

CORPUS = pathlib.Path(__file__).parent / "cap"
VALID = sorted(path.name for path in (CORPUS / "valid").glob("*.xml"))
REFUSED = "refused as unsafe or malformed XML (BadRequest)"

# Each invalid file and the XPath(s) of its fault(s), exactly.
INVALID = {
    "missing-identifier.xml": "/alert/identifier",
    "missing-sender.xml": "/alert/sender",
    "missing-sent.xml": "/alert/sent",
    "missing-status.xml": "/alert/status",
    "missing-msgtype.xml": "/alert/msgType",
    "missing-scope.xml": "/alert/scope",
    "missing-info-category.xml": "/alert/info[1]/category",
    "missing-info-event.xml": "/alert/info[1]/event",
    "missing-info-urgency.xml": "/alert/info[1]/urgency",
    "missing-info-severity.xml": "/alert/info[1]/severity",
    "missing-info-certainty.xml": "/alert/info[1]/certainty",
    "missing-area-areadesc.xml": "/alert/info[1]/area[1]/areaDesc",
    "missing-resource-resourcedesc.xml": "/alert/info[1]/resource[1]/resourceDesc",
    "missing-resource-mimetype.xml": "/alert/info[1]/resource[1]/mimeType",
    "status-unknown.xml": "/alert/status",
    "msgtype-unknown.xml": "/alert/msgType",
    "scope-unknown.xml": "/alert/scope",
    "category-unknown.xml": "/alert/info[1]/category[1]",
    "responsetype-unknown.xml": "/alert/info[1]/responseType[1]",
    "urgency-unknown.xml": "/alert/info[1]/urgency",
    "severity-unknown.xml": "/alert/info[1]/severity",
    "certainty-unknown.xml": "/alert/info[1]/certainty",
    "element-order.xml": "/alert/status",
    "element-order-area.xml": "/alert/info[1]/area[1]/polygon[1]",
    "element-duplicate.xml": "/alert/sent",
    "element-unknown.xml": "/alert/info[1]/priority",
    "element-foreign-namespace.xml": "/alert/info[1]/couleur",
    "element-with-children.xml": "/alert/info[1]/event",
    "namespace-missing.xml": "/alert",
    "namespace-cap11.xml": "/alert",
    "identifier-space.xml": "/alert/identifier",
    "identifier-comma.xml": "/alert/identifier",
    "identifier-ampersand.xml": "/alert/identifier",
    "sender-space.xml": "/alert/sender",
    "sender-less-than.xml": "/alert/sender",
    "sent-zulu.xml": "/alert/sent",
    "sent-no-offset.xml": "/alert/sent",
    "sent-fraction.xml": "/alert/sent",
    "sent-impossible-date.xml": "/alert/sent",
    "expires-zulu.xml": "/alert/info[1]/expires",
    "update-without-references.xml": "/alert/references",
    "cancel-without-references.xml": "/alert/references",
    "ack-without-references.xml": "/alert/references",
    "error-without-references.xml": "/alert/references",
    "reference-malformed.xml": "/alert/references",
    "reference-zulu.xml": "/alert/references",
    "reference-to-self.xml": "/alert/references",
    "reference-to-later.xml": "/alert/references",
    "restricted-without-restriction.xml": "/alert/restriction",
    "private-without-addresses.xml": "/alert/addresses",
    "addresses-unclosed-quote.xml": "/alert/addresses",
    "polygon-too-few-points.xml": "/alert/info[1]/area[1]/polygon[1]",
    "polygon-open.xml": "/alert/info[1]/area[1]/polygon[1]",
    "polygon-latitude-out-of-range.xml": "/alert/info[1]/area[1]/polygon[1]",
    "polygon-longitude-out-of-range.xml": "/alert/info[1]/area[1]/polygon[1]",
    "polygon-self-intersecting.xml": "/alert/info[1]/area[1]/polygon[1]",
    "polygon-not-numbers.xml": "/alert/info[1]/area[1]/polygon[1]",
    "polygon-semicolons.xml": "/alert/info[1]/area[1]/polygon[1]",
    "circle-negative-radius.xml": "/alert/info[1]/area[1]/circle[1]",
    "circle-without-radius.xml": "/alert/info[1]/area[1]/circle[1]",
    "circle-latitude-out-of-range.xml": "/alert/info[1]/area[1]/circle[1]",
    "ceiling-without-altitude.xml": "/alert/info[1]/area[1]/ceiling",
    "ceiling-below-altitude.xml": "/alert/info[1]/area[1]/ceiling",
    "altitude-not-number.xml": "/alert/info[1]/area[1]/altitude",
    "resource-size-not-integer.xml": "/alert/info[1]/resource[1]/size",
    "language-malformed.xml": "/alert/info[1]/language",
    "three-violations.xml": ("/alert/sent", "/alert/status", "/alert/info[2]/area[1]/polygon[1]"),
    "bomb.xml": REFUSED,
    "xxe.xml": REFUSED,
    "xxe-http.xml": REFUSED,
    "dtd-external.xml": REFUSED,
    "malformed.xml": REFUSED,
}


def read(kind: str, name: str) -> bytes:
    return (CORPUS / kind / name).read_bytes()


@pytest.fixture(scope="module")
def xsd():
    return etree.XMLSchema(etree.parse(str(CORPUS / "CAP-v1.2.xsd")))


def texts(element: ET.Element, path: str = "") -> list[tuple[str, str]]:
    """(path, text) of every element in document order; namespaces are part of the path."""
    path = f"{path}/{element.tag}"
    text = (element.text or "").strip() if len(element) else element.text or ""
    return [(path, text)] + [pair for child in element for pair in texts(child, path)]


def test_every_invalid_file_has_its_expectation():
    assert sorted(INVALID) == sorted(path.name for path in (CORPUS / "invalid").glob("*.xml"))


@pytest.mark.parametrize("name", VALID)
def test_a_valid_document_reads_back_identically(name, xsd):
    data = read("valid", name)
    doc = cap.parse(data)
    stored = json.loads(json.dumps(doc.to_json()))
    rebuilt = cap.Document.from_json(stored)
    out = cap.dumps(rebuilt)
    assert rebuilt == doc and cap.parse(out) == doc
    assert texts(ET.fromstring(out)) == texts(ET.fromstring(data))
    assert out.startswith(b"<?xml") and b'<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">' in out
    xsd.assertValid(etree.fromstring(data))
    xsd.assertValid(etree.fromstring(out))


@pytest.mark.parametrize("name", sorted(INVALID))
def test_an_invalid_document_is_refused_at_its_fault(name):
    expected = INVALID[name]
    if expected == REFUSED:
        with pytest.raises(errors.BadRequest):
            cap.parse(read("invalid", name))
        return
    with pytest.raises(errors.Invalid) as caught:
        cap.parse(read("invalid", name))
    fields = [problem["field"] for problem in caught.value.errors]
    assert fields == ([expected] if isinstance(expected, str) else list(expected))
    assert all(problem["message"] for problem in caught.value.errors)


def test_every_violation_is_reported_at_once():
    with pytest.raises(errors.Invalid) as caught:
        cap.parse(read("invalid", "three-violations.xml"))
    problems = caught.value.errors
    assert len(problems) == 3 and caught.value.field == "/alert/sent"
    assert "Z" in problems[0]["message"] and "'Real'" in problems[1]["message"] and "closed" in problems[2]["message"]
    assert caught.value.status == 422


@pytest.mark.parametrize("name", ["bomb.xml", "xxe.xml", "xxe-http.xml", "dtd-external.xml"])
def test_a_doctype_is_refused_at_once(name):
    started = time.perf_counter()
    with pytest.raises(errors.BadRequest) as caught:
        cap.parse(read("invalid", name))
    assert time.perf_counter() - started < 0.5
    assert "DOCTYPE" in caught.value.message and caught.value.status == 400


def test_a_malformed_document_names_line_and_column():
    with pytest.raises(errors.BadRequest) as caught:
        cap.parse(read("invalid", "malformed.xml"))
    assert (caught.value.line, caught.value.column) == (9, 18)
    assert "mismatched tag at line 9, column 18" in caught.value.message


def test_an_oversized_document_is_refused_before_parsing():
    with pytest.raises(errors.TooLarge) as caught:  # 413, as any body too large
        cap.parse(b"<" * (cap.MAX_BYTES + 1))
    assert caught.value.limit == cap.MAX_BYTES and "bytes" in caught.value.message and caught.value.status == 413


def test_times_keep_the_offset_they_were_sent_with():
    doc = cap.parse(read("valid", "crue-paris-fr.xml"))
    assert doc.sent == dt.datetime(2030, 6, 12, 12, 30, tzinfo=dt.UTC)
    assert doc.sent.utcoffset() == dt.timedelta(hours=2)
    assert b"<sent>2030-06-12T14:30:00+02:00</sent>" in cap.dumps(doc)
    utc = cap.parse(read("valid", "test-sirenes.xml"))
    assert b"<sent>2030-06-05T10:00:00-00:00</sent>" in cap.dumps(utc)
    plus = cap.parse(read("valid", "test-sirenes.xml").replace(b"10:00:00-00:00", b"10:00:00+00:00"))
    assert plus.sent == utc.sent and b"<sent>2030-06-05T10:00:00+00:00</sent>" in cap.dumps(plus)
    made_here = dataclasses.replace(utc, sent=dt.datetime(2030, 6, 5, 10, tzinfo=dt.UTC))
    assert b"<sent>2030-06-05T10:00:00-00:00</sent>" in cap.dumps(made_here)


def test_values_are_read_as_numbers_and_pairs():
    doc = cap.parse(read("valid", "crue-paris-fr.xml"))
    info = doc.infos[0]
    area = info.areas[0]
    assert info.language == "fr-FR" and info.categories == ("Met", "Safety")
    assert ("template", "inondation") in info.parameters
    assert area.polygons[0][0] == area.polygons[0][-1] == (48.9021, 2.3203)
    assert area.circles == ((48.8566, 2.3522, 5.0),)
    assert area.geocodes == (("INSEE", "75056"), ("DEPARTEMENT", "75"))
    seveso = cap.parse(read("valid", "exercice-seveso.xml"))
    assert seveso.incidents == ("PPI-PETIT-COURONNE-2030", "exercice ORSEC octobre")
    assert (seveso.infos[0].areas[0].altitude, seveso.infos[0].areas[0].ceiling) == (0.0, 3280.8)


def test_addresses_with_spaces_are_quoted_entries():
    doc = cap.parse(read("valid", "prive-maires.xml"))
    assert doc.addresses == (
        "mairie-paris-centre@paris.fr", "Cellule de crise Paris Centre", "sdis-75@interieur.gouv.fr",
    )
    assert b'"Cellule de crise Paris Centre"' in cap.dumps(doc)


def test_references_are_triplets_in_their_own_offset():
    doc = cap.parse(read("valid", "fin-alerte.xml"))
    assert [ref.identifier for ref in doc.references] == ["FR-75-20300612-0001", "FR-75-20300612-0002"]
    assert doc.references[0] == cap.Reference(
        "prefecture-75@interieur.gouv.fr", "FR-75-20300612-0001",
        dt.datetime(2030, 6, 12, 14, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    )


def test_language_defaults_to_en_us():
    data = read("valid", "crue-paris-fr.xml").replace(b"<language>fr-FR</language>", b"")
    assert cap.parse(data).infos[0].language == "en-US"


def test_numbers_are_written_in_their_shortest_plain_form():
    doc = cap.parse(read("valid", "crue-paris-fr.xml"))
    area = dataclasses.replace(
        doc.infos[0].areas[0],
        polygons=(((48.85, 2.0), (48.86, 2.00001), (48.84, 2.00001), (48.85, 2.0)),), circles=((48.85, 2.35, 1e-05),),
    )
    out = cap.dumps(dataclasses.replace(doc, infos=(dataclasses.replace(doc.infos[0], areas=(area,)),)))
    assert b"<polygon>48.85,2 48.86,2.00001 48.84,2.00001 48.85,2</polygon>" in out
    assert b"<circle>48.85,2.35 0.00001</circle>" in out
    assert cap.parse(out).infos[0].areas[0] == area


def test_a_signature_may_close_the_alert_but_nothing_may_follow_it():
    signature = b'<Signature xmlns="http://www.w3.org/2000/09/xmldsig#"><SignedInfo/></Signature>'
    data = read("valid", "accuse-reception.xml")
    signed = data.replace(b"</alert>", signature + b"</alert>")
    assert cap.parse(signed) == cap.parse(data)
    with pytest.raises(errors.Invalid) as caught:
        cap.parse(data.replace(b"<note>", signature + b"<note>"))
    assert [p["field"] for p in caught.value.errors] == ["/alert/note", "/alert/references"]


def test_cap_stays_in_the_core():
    edges = ("alertd.", "aiohttp", "asyncpg", "sqlite3")
    code = f"import sys, alertd.cap; print(*sorted(m for m in sys.modules if m.startswith({edges!r})))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=CORPUS.parents[1])
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["alertd.cap", "alertd.cap.check", "alertd.errors"]


# Written in the style of those publishers' feeds: each dates `effective` before `sent`, as they do.
PUBLISHERS = {
    "eccc-orages-montreal-en-fr-ca.xml": ("en-CA", "fr-CA"),
    "bom-canicule-sydney-en-au.xml": ("en-AU",),
    "ipaws-evacuation-miami-dade-en-es-419.xml": ("en-US", "es-419"),
    "dwd-gewitter-muenchen-de-en.xml": ("de-DE", "en-GB"),
    "meteoalarm-vent-finistere-fr-en.xml": ("fr-FR", "en-GB"),
}


@pytest.mark.parametrize("name", sorted(PUBLISHERS))
def test_publishers_documents_with_effective_before_sent_are_valid(name):
    doc = cap.parse(read("valid", name))
    assert all(info.effective < doc.sent for info in doc.infos)
    assert tuple(info.language for info in doc.infos) == PUBLISHERS[name]


def test_expires_before_sent_is_valid_cap():
    doc = cap.parse(read("valid", "expires-before-sent.xml"))
    assert doc.infos[0].expires < doc.sent


@pytest.mark.parametrize("tag", ["es-419", "zh-Hant-TW", "sr-Latn-RS", "fr-CA", "de-CH-1901"])
def test_extended_language_tags_are_read_as_written(tag):
    language = f"<language>{tag}</language>".encode()
    data = read("valid", "crue-paris-fr.xml").replace(b"<language>fr-FR</language>", language)
    assert cap.parse(data).infos[0].language == tag


def test_numbers_come_back_as_the_publisher_wrote_them():
    data = read("valid", "ipaws-evacuation-miami-dade-en-es-419.xml")
    doc = cap.parse(data)
    assert doc.infos[0].areas[0].polygons[0][0] == (25.97, -80.12)
    padded = b"<polygon>25.9700,-80.1200 25.7600,-80.1300 25.5500,-80.3000 25.6000,-80.3400 25.9700,-80.1200"
    stored = cap.Document.from_json(json.loads(json.dumps(doc.to_json())))
    assert data.count(padded) == cap.dumps(stored).count(padded) == 2
    circle = b"<circle>48.85660,2.35220 5.0</circle>"
    written = read("valid", "crue-paris-fr.xml").replace(b"<circle>48.8566,2.3522 5</circle>", circle)
    assert circle in cap.dumps(cap.parse(written))
    ring = ((25.9, -80.1), (25.8, -80.1), (25.8, -80.2), (25.9, -80.1))
    moved = dataclasses.replace(doc.infos[0].areas[0], polygons=(ring,))
    out = cap.dumps(dataclasses.replace(doc, infos=(dataclasses.replace(doc.infos[0], areas=(moved,)),)))
    assert b"<polygon>25.9,-80.1 25.8,-80.1 25.8,-80.2 25.9,-80.1</polygon>" in out  # a changed value: its own text
