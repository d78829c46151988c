"""CAP documents as alerts, and alerts as CAP documents.

A CAP message comes in as a `cap.Document` (validated against CAP 1.2 by `cap.parse`); here it
becomes the same `model.Alert` a JSON order would, with alertd's own rules: only Public messages
are broadcast, only Alert, Update and Cancel are acted on, and the area must name something alertd
can target (a polygon, a circle, or an INSEE geocode). Problems name the XPath of the element at
fault, like `cap.parse` does.

The `<parameter>`s become template params: `template` picks a template, `channels` the kinds of
channel ("sms push siren", all configured ones when absent), `topics` (true/false) the zone topics.
A param whose value differs between languages is given to each language as `<name>_<lang>`, which
the renderer uses for that language.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterator, Mapping, Sequence

from alertd import cap, errors, geo, model, orders, zones

ACTED_ON = {"Alert": model.MsgType.ALERT, "Update": model.MsgType.UPDATE, "Cancel": model.MsgType.CANCEL}
ZONE_GEOCODES = frozenset({"INSEE", "DEPARTEMENT"})  # valueNames whose value is a French zone code
NATIONAL_GEOCODE = ("ISO3166-1", "FR")
RESERVED = frozenset({"template", "channels", "topics"})
# What alertd can target, counted by `cap.parse` before it reads a polygon.
LIMITS = cap.Limits(polygons=geo.MAX_POLYGONS, vertices=geo.MAX_VERTICES, circles=geo.MAX_CIRCLES)


def to_alert(
    doc: cap.Document, *, alert_id: str, cell: str, token_id: str, kinds: Sequence[str], now: dt.datetime,
    defaults: Sequence[str] | None = None,
) -> model.Alert:
    """The alert a CAP document orders; `kinds` are the configured kinds, `defaults` those a
    document that names none goes over (all of them unless told)."""
    problems = list(_problems(doc, now))
    params, named = _parameters(doc.infos)
    channels = _channels(named.get("channels"), kinds, problems, kinds if defaults is None else defaults)
    area = _area(doc.infos, problems) if doc.msg_type != "Cancel" or _has_area(doc) else model.Area()
    if problems:
        raise errors.Invalid(f"{problems[0]['field']}: {problems[0]['message']}", field=problems[0]["field"],
                             errors=problems)
    first = doc.infos[0] if doc.infos else None
    template = named.get("template")
    return model.Alert(
        id=alert_id, identifier=doc.identifier, sender=doc.sender, cell=cell, sent=model.to_utc(doc.sent),
        status=model.Status(doc.status.lower()), msg_type=ACTED_ON[doc.msg_type],
        references=tuple(model.Reference(r.sender, r.identifier, r.sent) for r in doc.references),
        # None in a cancel without infos, until `lifecycle.complete` takes the stopped alert's.
        event=first.event if first else None, urgency=first.urgency if first else None,  # type: ignore[arg-type]
        severity=first.severity if first else None, certainty=first.certainty if first else None,  # type: ignore[arg-type]
        expires=_expires(doc.infos), area=area, channels=channels, template=template, params=params,
        texts={} if template else {
            _locale(i.language): _text(i) for i in doc.infos if i.headline or i.instruction or i.description
        },
        locale=_locale(first.language) if first else None, topics=named.get("topics", "").lower() == "true",
        token_id=token_id, category=first.categories[0] if first else model.DEFAULT_CATEGORY,
    )


def _problem(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message}


def _problems(doc: cap.Document, now: dt.datetime) -> Iterator[dict[str, str]]:
    if doc.msg_type not in ACTED_ON:
        yield _problem("/alert/msgType", f"alertd acts on Alert, Update and Cancel messages, not {doc.msg_type}")
    if doc.scope != "Public":
        yield _problem("/alert/scope", "alertd broadcasts to the public: only Public messages are accepted")
    if not doc.infos and doc.msg_type != "Cancel":
        yield _problem("/alert/info", "an alert to broadcast needs an info block")
    yield from _one_text_per_language(doc.infos)
    for n, info in enumerate(doc.infos, 1):
        if info.expires is not None and info.expires <= now:  # CAP allows it; there is nothing left to warn of
            yield _problem(f"/alert/info[{n}]/expires", f"the alert expired at {cap.format_time(info.expires)}, "
                           "before it reached alertd: alertd broadcasts nothing already past")
        if not re.fullmatch(orders.LOCALE_PATTERN, _locale(info.language)):
            yield _problem(f"/alert/info[{n}]/language", f"not a language tag (RFC 5646) alertd can address: "
                           f"{info.language!r}")


def _one_text_per_language(infos: Sequence[cap.Info]) -> Iterator[dict[str, str]]:
    """alertd sends each recipient the one text of their language over the union of the infos'
    areas: two infos in one language (an area split between two instructions, say) would send
    someone the other's instruction."""
    seen: set[str] = set()
    for n, info in enumerate(infos, 1):
        if _locale(info.language) in seen:
            yield _problem(f"/alert/info[{n}]/language", "another info has this language: alertd sends one "
                           "text per language over the whole area; merge them, or send one alert per area")
        seen.add(_locale(info.language))


def _locale(language: str) -> str:
    """CAP's language tag as alertd spells locales: fr, fr-FR, es-419, zh-Hant-TW."""
    return model.language_tag(language)


def _text(info: cap.Info) -> model.Text:
    return model.Text(info.headline or info.event, info.instruction or "", info.description or "")


def _expires(infos: Sequence[cap.Info]) -> dt.datetime | None:
    ends = [i.expires for i in infos if i.expires is not None]
    return model.to_utc(min(ends)) if ends else None


def _parameters(infos: Sequence[cap.Info]) -> tuple[dict[str, str], dict[str, str]]:
    """(template params, alertd's own parameters) from every info: the first language's value is
    the param; another language's different value is `<name>_<lang>`."""
    params: dict[str, str] = {}
    named: dict[str, str] = {}
    for info in infos:
        lang = _locale(info.language).split("-")[0]
        for name, value in info.parameters:
            if name in RESERVED:
                named.setdefault(name, value)
            elif re.fullmatch(orders.PARAM_NAME_PATTERN, name):  # noqa: SIM102 (others are for other systems)
                if params.setdefault(name, value) != value:
                    params[f"{name}_{lang}"] = value
    return params, named


def _channels(
    text: str | None, configured: Sequence[str], problems: list[dict[str, str]], defaults: Sequence[str]
) -> tuple[str, ...]:
    if text is None:
        return tuple(defaults)
    names = [n for n in re.split(r"[\s,]+", text) if n]
    unknown = [n for n in names if n not in configured]
    if unknown or not names:
        problems.append(_problem("/alert/info[1]/parameter", f"channels: no channel configured for "
                                 f"{' '.join(unknown)} (configured: {' '.join(configured)})"))
        return ()
    return tuple(dict.fromkeys(model.kind(n) for n in names))


def _has_area(doc: cap.Document) -> bool:
    return any(info.areas for info in doc.infos)


def _area(infos: Sequence[cap.Info], problems: list[dict[str, str]]) -> model.Area:
    """The union of every info's areas (each language usually repeats the same area)."""
    zones: dict[str, None] = {}
    polygons: dict[model.Ring, None] = {}
    circles: dict[model.Circle, None] = {}
    descriptions: dict[str, None] = {}
    for n, info in enumerate(infos, 1):
        for m, area in enumerate(info.areas, 1):
            descriptions.setdefault(area.area_desc)
            polygons.update(dict.fromkeys(area.polygons))
            circles.update(dict.fromkeys(area.circles))
            zones.update(dict.fromkeys(_zones(area, f"/alert/info[{n}]/area[{m}]", problems)))
    if not (zones or polygons or circles):
        problems.append(_problem("/alert/info[1]/area", "no polygon, circle or INSEE geocode alertd can target"))
    try:
        geo.check(tuple(polygons), tuple(circles))
    except errors.Invalid as exc:  # the sizes alertd takes, which CAP leaves open
        problems.extend(_problem("/alert/info/area", f"{e['field']}: {e['message']}") for e in exc.errors or ())
    return model.Area(tuple(zones), "; ".join(descriptions), tuple(polygons), tuple(circles))


def _zones(area: cap.Area, path: str, problems: list[dict[str, str]]) -> Iterator[str]:
    for k, (name, value) in enumerate(area.geocodes, 1):
        if (name, value) == NATIONAL_GEOCODE:
            yield zones.NATIONAL
        elif name.upper() in ZONE_GEOCODES:
            if re.fullmatch(zones.LOCAL_PATTERN, value.upper()):
                yield value.upper()
            else:
                problems.append(
                    _problem(f"{path}/geocode[{k}]/value", f"not an INSEE commune or département code: {value!r}")
                )


def located(exc: errors.Invalid) -> errors.Invalid:
    """A problem with a CAP document's references (found by `lifecycle`), located by XPath."""
    problems = [{"field": "/alert/references", "message": f"{e['field']}: {e['message']}"} for e in exc.errors or ()]
    return errors.Invalid(exc.message, field="/alert/references", errors=problems)


# -- out ---------------------------------------------------------------------------------------------


def to_document(alert: model.Alert, rendered: Mapping[str, model.Text] | None = None) -> cap.Document:
    """A CAP document for an alert ordered in JSON: one info per language of its texts or, for a
    template alert, of `rendered`, its words in each language its templates provide (see
    `render.Renderer.cap_texts`), so a reader gets words, not just a template's name. The template
    and its params travel as parameters too, so another alertd reading it sends the same."""
    return cap.Document(
        identifier=alert.identifier, sender=alert.sender, sent=alert.sent, status=alert.status.value.capitalize(),
        msg_type=alert.msg_type.value.capitalize(), scope="Public",
        references=tuple(cap.Reference(r.sender, r.identifier, r.sent) for r in alert.references),
        infos=tuple(_infos(alert, (rendered or {}) if alert.template else alert.texts)),
    )


def _infos(alert: model.Alert, words: Mapping[str, model.Text]) -> Iterator[cap.Info]:
    base = cap.Info(
        language=alert.locale or "fr", categories=(alert.category,), event=alert.event, urgency=alert.urgency,
        severity=alert.severity, certainty=alert.certainty, expires=alert.expires, sender_name=alert.cell or None,
        parameters=tuple(_out_parameters(alert)), areas=(_out_area(alert.area),),
    )
    if not words:
        yield base
    for language, text in words.items():
        yield dataclasses.replace(
            base, language=language, headline=text.headline or None, description=text.description or None,
            instruction=text.instruction or None,
        )


def _out_parameters(alert: model.Alert) -> Iterator[tuple[str, str]]:
    if alert.template:
        yield "template", alert.template
    yield "channels", " ".join(str(k) for k in alert.channels)
    if alert.topics:
        yield "topics", "true"
    for name, value in alert.params.items():
        yield name, str(value).lower() if isinstance(value, bool) else str(value)


def _out_area(area: model.Area) -> cap.Area:
    geocodes = tuple(
        NATIONAL_GEOCODE if z == zones.NATIONAL else ("INSEE" if len(z) == 5 else "DEPARTEMENT", z) for z in area.zones
    )
    return cap.Area(
        area_desc=area.description or ", ".join(area.zones) or "—", polygons=area.polygons, circles=area.circles,
        geocodes=geocodes,
    )
