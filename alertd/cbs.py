"""Cell broadcast (CBS) decisions: the message identifier an alert goes out on, and its pages.

Pure: the `cell_broadcast` channel sends what these decide, and the renderer refuses at order time a
text that needs more than `MAX_PAGES` pages.

Message identifiers: 3GPP TS 23.041 §9.4.1.2.2 (CMAS / WEA, and EU-Alert, ETSI TS 102 900 §5)::

    4370        Presidential alert / EU-Alert level 1 (EU-Presidential)
    4371-4372   Extreme × Immediate × Observed / Likely             (EU-Extreme)
    4373-4374   Extreme × Expected × Observed / Likely              (EU-Severe)
    4375-4376   Severe × Immediate × Observed / Likely              (EU-Severe)
    4377-4378   Severe × Expected × Observed / Likely               (EU-Severe)
    4379        Child abduction emergency (AMBER)                   (EU-Amber)
    4380        Required monthly test                               (EU-Monthly Test)
    4381        Exercise                                            (EU-Exercise)
    4383-4395   4370-4382, in an additional language (+ 13)
    4396        Public safety alert                                 (EU-Info)
    4397        4396 in an additional language

Pages: TS 23.041 §9.3.19 / TS 23.038 §6: a page carries 82 octets: 93 septets of the GSM 7-bit
default alphabet (an extension-table character takes two: the escape and its code) or 41 UCS-2
characters (one outside the BMP takes two), padded with carriage returns; a message has at most
15 pages. An escape pair or a surrogate pair never straddles two pages.
"""

from __future__ import annotations

import dataclasses
import hashlib

from alertd import errors

PRESIDENTIAL = 4370
AMBER = 4379
MONTHLY_TEST = 4380
EXERCISE = 4381
PUBLIC_SAFETY = 4396
ADDITIONAL_LANGUAGE = 13  # added to 4370-4382 for a message not in the network's own language
# (severity, urgency, certainty) → 4371-4378
CMAS = {
    (severity, urgency, certainty): 4371 + 4 * s + 2 * u + c
    for s, severity in enumerate(("extreme", "severe"))
    for u, urgency in enumerate(("immediate", "expected"))
    for c, certainty in enumerate(("observed", "likely"))
}
# CAP has no flag for it: the event names the EAS code CAE and the French "alerte enlèvement" use.
AMBER_EVENTS = frozenset({"amber", "amber alert", "child abduction emergency", "alerte enlèvement"})

PAGE_OCTETS = 82
GSM7_PAGE = 93  # septets
UCS2_PAGE = PAGE_OCTETS // 2  # UTF-16 code units
MAX_PAGES = 15
CR = "\r"

# TS 23.038 §6.2.1: the default alphabet in code order (0x1B is the escape to the extension table).
GSM7_TABLE = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_CODES = {c: i for i, c in enumerate(GSM7_TABLE) if c != "\x1b"}
GSM7_EXTENSION_CODES = {"\f": 0x0A, "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F, "[": 0x3C, "~": 0x3D, "]": 0x3E,
                        "|": 0x40, "€": 0x65}
ESCAPE = 0x1B

# TS 23.038 §5, coding group 0000: GSM 7-bit in a named language; 0x0F: language unspecified.
GSM7_LANGUAGE_DCS = {"de": 0x00, "en": 0x01, "it": 0x02, "fr": 0x03, "es": 0x04, "nl": 0x05, "sv": 0x06,
                     "da": 0x07, "pt": 0x08, "fi": 0x09, "no": 0x0A, "el": 0x0B, "tr": 0x0C, "hu": 0x0D,
                     "pl": 0x0E}
GSM7_UNSPECIFIED_DCS = 0x0F
UCS2_DCS = 0x48  # general data coding (01xx), uncompressed, no class, UCS-2


@dataclasses.dataclass(frozen=True)
class Pages:
    """A text cut into CBS pages: `dcs` and each page's 82 octets."""

    encoding: str  # "GSM-7" or "UCS-2"
    dcs: int
    pages: tuple[bytes, ...]
    characters: int  # septets (GSM-7) or UTF-16 code units (UCS-2) used, padding aside


def message_id(status: str, event: str, severity: str, urgency: str, certainty: str, *, national: bool = False,
               additional_language: bool = False) -> int:
    """The message identifier an alert goes out on (table in the module docstring). An actual
    national alert at the highest level (Extreme, Immediate, Observed) is EU-Alert level 1; one
    below the CMAS levels (Moderate, Minor, Future, Possible...) is a public safety alert."""
    status, levels = status.lower(), (severity.lower(), urgency.lower(), certainty.lower())
    if status in ("test", "system"):
        base = MONTHLY_TEST
    elif status == "exercise":
        base = EXERCISE
    elif national and levels == ("extreme", "immediate", "observed"):
        base = PRESIDENTIAL
    elif event.strip().lower() in AMBER_EVENTS:
        base = AMBER
    else:
        base = CMAS.get(levels, PUBLIC_SAFETY)
    if not additional_language:
        return base
    return base + 1 if base == PUBLIC_SAFETY else base + ADDITIONAL_LANGUAGE


def serial_code(alert_id: str) -> int:
    """The 10-bit message code of the alert's serial number: the same for every try of one alert,
    so a CBC sees a retry as the same message."""
    return int.from_bytes(hashlib.sha256(alert_id.encode()).digest()[:2], "big") % 1024


def is_gsm7(text: str) -> bool:
    return all(c in GSM7_CODES or c in GSM7_EXTENSION_CODES for c in text)


def paginate(text: str, language: str = "") -> Pages:
    """`text` in CBS pages, GSM-7 when every character has a code there, else UCS-2. Raises
    `errors.MessageTooLong` (field `body`) when it needs more than `MAX_PAGES`."""
    if is_gsm7(text):
        units = [[GSM7_CODES[c]] if c in GSM7_CODES else [ESCAPE, GSM7_EXTENSION_CODES[c]] for c in text]
        chunks = _cut(units, GSM7_PAGE)
        pages = tuple(_pack7(chunk + [GSM7_CODES[CR]] * (GSM7_PAGE - len(chunk))) for chunk in chunks)
        dcs = GSM7_LANGUAGE_DCS.get(language, GSM7_UNSPECIFIED_DCS)
        return _checked(Pages("GSM-7", dcs, pages, sum(map(len, units))))
    units = [_utf16(c) for c in text]
    chunks = _cut(units, UCS2_PAGE)
    pages = tuple(b"".join(u.to_bytes(2, "big") for u in chunk + [ord(CR)] * (UCS2_PAGE - len(chunk)))
                  for chunk in chunks)
    return _checked(Pages("UCS-2", UCS2_DCS, pages, sum(map(len, units))))


def _utf16(c: str) -> list[int]:
    """A character's UTF-16 code units: a surrogate pair outside the BMP."""
    if ord(c) <= 0xFFFF:
        return [ord(c)]
    v = ord(c) - 0x10000
    return [0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF)]


def _cut(units: list[list[int]], size: int) -> list[list[int]]:
    """Characters (each a list of code units that stay together) into pages of `size` units."""
    pages: list[list[int]] = [[]]
    for unit in units:
        if len(pages[-1]) + len(unit) > size:
            pages.append([])
        pages[-1].extend(unit)
    return pages


def _pack7(septets: list[int]) -> bytes:
    """TS 23.038 §6.1.2.1: septets packed into octets, least significant bit first."""
    value = sum(s << (7 * i) for i, s in enumerate(septets))
    return value.to_bytes(PAGE_OCTETS, "little")


def _checked(pages: Pages) -> Pages:
    if len(pages.pages) > MAX_PAGES:
        raise errors.MessageTooLong(
            f"The cell broadcast takes {len(pages.pages)} pages of {PAGE_OCTETS} octets ({pages.encoding});"
            f" at most {MAX_PAGES}.", field="body", pages=len(pages.pages), limit=MAX_PAGES,
            encoding=pages.encoding,
        )
    return pages


def text_of(dcs: int, pages: list[bytes]) -> str:
    """The text of a message's pages, padding removed (for the fake CBC and the tests)."""
    if dcs == UCS2_DCS:
        return b"".join(pages).decode("utf-16-be").rstrip(CR)
    return "".join(unpack7(page) for page in pages).rstrip(CR)


def unpack7(octets: bytes, count: int = GSM7_PAGE) -> str:
    """A page's septets back to text, padding kept."""
    value = int.from_bytes(octets, "little")
    septets = [(value >> (7 * i)) & 0x7F for i in range(count)]
    out, escaped = [], False
    extension = {code: c for c, code in GSM7_EXTENSION_CODES.items()}
    for s in septets:
        if escaped:
            out.append(extension.get(s, " "))
            escaped = False
        elif s == ESCAPE:
            escaped = True
        else:
            out.append(GSM7_TABLE[s])
    return "".join(out)
