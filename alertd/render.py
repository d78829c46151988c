"""Message rendering: sandboxed Jinja2 templates, locale fallback, SMS segments and push size.

Templates live in `templates/<locale>/<name>.<kind>.j2` (conventions in templates/README.md). An
order's params and free texts are data handed to the templates as values: they are never compiled,
so `{{ 7*7 }}` in a param stays literal text.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import json
import pathlib
import re
import threading
import zoneinfo
from collections.abc import Mapping
from typing import Any

import jinja2
from jinja2 import exceptions as jinja_errors, sandbox, utils as jinja_utils

from alertd import cbs, errors, model

# 3GPP TS 23.038 default alphabet (without the escape character) and its extension table, whose
# characters take two septets each.
GSM7_BASIC = frozenset(cbs.GSM7_CODES)
GSM7_EXTENSION = frozenset(cbs.GSM7_EXTENSION_CODES)
GSM7 = GSM7_BASIC | GSM7_EXTENSION

# Room left in an FCM message for what the push channel adds besides title and body: the data keys
# (alert id, identifier, event, severity...), the android/apns blocks and JSON punctuation.
PUSH_DATA_OVERHEAD = 512

GENERIC = "generic"
_FILE = re.compile(rf"(?P<name>[a-z0-9][a-z0-9_]*)\.(?P<kind>{model.KIND_PATTERN.strip('^$')})\.j2")

# How each locale says when an alert expires: (same day as sent, another day, time format).
EXPIRES = {
    "fr": ("jusqu'à {time}", "jusqu'au {date} à {time}", "{h}h{m:02d}"),
    "en": ("until {time}", "until {time} on {date}", "{h:02d}:{m:02d}"),
    "es": ("hasta las {time}", "hasta el {date} a las {time}", "{h:02d}:{m:02d}"),
    "ar": ("حتى الساعة {time}", "حتى {date} الساعة {time}", "{h:02d}:{m:02d}"),
}
EXPIRES_FALLBACK = "en"

# Each locale's word for an exercise. Templates print it themselves (`lib.prefix`); the renderer
# adds it to any exercise message that lacks it, so no template can let an exercise pass as real.
EXERCISE = {"fr": "EXERCICE", "en": "EXERCISE", "es": "SIMULACRO", "ar": "تمرين"}
EXERCISE_FALLBACK = "en"


@dataclasses.dataclass(frozen=True)
class Rendered:
    """One message as a recipient in `locale` gets it over a channel of `kind`."""

    locale: str
    kind: str
    title: str
    body: str
    encoding: str = ""  # "GSM-7" or "UCS-2" for SMS
    segments: int = 0  # SMS segments, cell broadcast pages
    size: int = 0  # bytes: the push payload estimate, or the UTF-8 body


# -- channel limits ------------------------------------------------------------------------------


def sms_encoding(text: str) -> str:
    return "GSM-7" if set(text) <= GSM7 else "UCS-2"


def sms_segments(text: str) -> int:
    """How many SMS parts `text` is sent as (an empty text still costs one)."""
    if sms_encoding(text) == "GSM-7":
        costs, single, part = [2 if c in GSM7_EXTENSION else 1 for c in text], 160, 153
    else:  # UTF-16 code units: a character outside the BMP takes two
        costs, single, part = [2 if ord(c) > 0xFFFF else 1 for c in text], 70, 67
    return 1 if sum(costs) <= single else _pack(costs, part)


def _pack(costs: list[int], part: int) -> int:
    # An escape pair or a surrogate pair is never split across two parts.
    parts, used = 1, 0
    for cost in costs:
        if used + cost > part:
            parts, used = parts + 1, 0
        used += cost
    return parts


def push_size(title: str, body: str) -> int:
    """Bytes of the FCM message payload: the notification as JSON plus room for the data keys."""
    notification = json.dumps({"notification": {"title": title, "body": body}}, ensure_ascii=False)
    return len(notification.encode()) + PUSH_DATA_OVERHEAD


# -- what templates see --------------------------------------------------------------------------


def format_expires(expires: dt.datetime | None, sent: dt.datetime, locale: str, tz: dt.tzinfo) -> str:
    """`expires` as a phrase of `locale` ("jusqu'à 18h30"), with the date when not the day sent."""
    if expires is None:
        return ""
    same_day, other_day, time_format = EXPIRES.get(locale, EXPIRES[EXPIRES_FALLBACK])
    local = expires.astimezone(tz)
    time = time_format.format(h=local.hour, m=local.minute)
    if local.date() == sent.astimezone(tz).date():
        return same_day.format(time=time)
    return other_day.format(time=time, date=f"{local.day:02d}/{local.month:02d}")


def localized_params(params: Mapping[str, Any], locale: str) -> dict[str, Any]:
    """An order's params for `locale`: `reason_en` stands in for `reason` in English messages.

    Text params are folded to one line: a param cannot add lines (nor a push title)."""
    suffix = "_" + locale
    merged = {k: _one_line(v) for k, v in params.items()}
    merged.update({k[: -len(suffix)]: v for k, v in merged.items() if k.endswith(suffix)})
    return merged


def _one_line(value: Any) -> Any:
    return " ".join(value.split()) if isinstance(value, str) else value


def sentence(value: Any) -> str:
    """A template filter: `value` ending with a full stop unless it already ends a sentence."""
    text = "" if value is None or isinstance(value, jinja2.Undefined) else str(value).strip()
    return text + "." if text and text[-1] not in ".!?…؟" else text


class _Undefined(jinja2.ChainableUndefined):
    """A missing param renders empty; an unknown top-level name or an unsafe attribute raises."""

    __slots__ = ()

    def __init__(self, hint=None, obj=jinja_utils.missing, name=None, exc=jinja_errors.UndefinedError):
        super().__init__(hint, obj, name, exc)
        top_level = obj is jinja_utils.missing and hint is None and name is not None
        if top_level or exc is jinja_errors.SecurityError:
            self._fail_with_undefined_error()


def _finalize(value: Any) -> Any:
    return "" if value is None else value


# -- the renderer --------------------------------------------------------------------------------


class Renderer:
    """Renders alerts from a template folder; compiled templates and renderings are cached.

    The folder is read once: build a new Renderer to pick up changed templates."""

    def __init__(
        self,
        template_dir: str | pathlib.Path,
        default_locale: str = "fr",
        sms_max_segments: int = 3,
        push_max_bytes: int = 4096,
        display_timezone: str = "Europe/Paris",
        cache_size: int = 4096,
    ) -> None:
        root = pathlib.Path(template_dir)
        self._files = _scan(root)
        self._locales = sorted({loc for loc, _, _ in self._files})
        self._names = sorted({name for _, name, _ in self._files if name != GENERIC})
        if default_locale not in self._locales:
            raise errors.ConfigError(f"no templates for the default locale {default_locale!r} in {root}")
        try:
            self.tz = zoneinfo.ZoneInfo(display_timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise errors.ConfigError(f"unknown display timezone {display_timezone!r}") from exc
        self.default_locale = default_locale
        self.sms_max_segments = sms_max_segments
        self.push_max_bytes = push_max_bytes
        self._env = sandbox.ImmutableSandboxedEnvironment(
            loader=jinja2.FileSystemLoader(root),
            autoescape=False,
            undefined=_Undefined,
            finalize=_finalize,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
            cache_size=1000,
        )
        self._env.filters["sentence"] = sentence
        self._cache: collections.OrderedDict[tuple, Rendered] = collections.OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def locales(self) -> list[str]:
        return list(self._locales)

    def templates(self) -> list[str]:
        return list(self._names)

    def resolve_locale(
        self, wanted: str | None, fallback: str | None, *, name: str | None = None,
        kind: str | None = None,
    ) -> str:
        """Recipient locale → alert fallback → default: the first with a folder (and, given a
        `name` and `kind`, that template), each tag tried from most to least specific: `es-419`
        counts as `es`, `zh-Hant-TW` as `zh-hant`, then `zh`."""
        for locale in self._candidates(wanted, fallback):
            found = (locale, name, kind) in self._files if name else locale in self._locales
            if found:
                return locale
        raise errors.UnknownTemplate(
            f"No template {name!r} for {kind} in any locale.", field="template", template=name, kind=kind
        )

    def render(self, alert: model.Alert, kind: str, locale: str | None) -> Rendered:
        """`render_fresh`, remembered per (alert id, kind, locale): the dispatcher asks once per delivery."""
        key = (alert.id, model.kind(kind), locale)
        with self._lock:
            if (hit := self._cache.get(key)) is not None:
                self._cache.move_to_end(key)
                return hit
        rendered = self.render_fresh(alert, kind, locale)
        with self._lock:
            self._cache[key] = rendered
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return rendered

    def render_fresh(self, alert: model.Alert, kind: str, locale: str | None) -> Rendered:
        """The message for a recipient in `locale`, rendered now (previews and order checks)."""
        kind = model.kind(kind)
        if alert.template is None:
            return self._render_generic(alert, kind, locale)
        if alert.template not in self._names:
            raise errors.UnknownTemplate(f"No template named {alert.template!r}.", field="template",
                                         template=alert.template)
        loc = self.resolve_locale(locale, alert.locale, name=alert.template, kind=kind)
        out = self._run(f"{loc}/{alert.template}.{kind}.j2", self._context(alert, loc))
        return self._finish(_marked(alert, out, loc), loc, kind, field="params" if alert.params else "template")

    def cap_texts(self, alert: model.Alert) -> dict[str, model.Text]:
        """A template alert's words for its CAP document, in each locale that has its push message
        (the one written in full for a reader, and the only one with a title: the SMS is cut to its
        segments, the siren's is for the ear), the alert's own locale first: the push title as
        headline, its body as description, as a push recipient gets them. Rendered fresh, not
        cached: a draft's words must not stand for the alert its approval makes."""
        kind = model.Kind.PUSH
        have = [loc for loc in self._locales if (loc, alert.template, kind) in self._files]
        first = next((loc for loc in self._candidates(alert.locale) if loc in have), None)
        words: dict[str, model.Text] = {}
        for loc in sorted(have, key=lambda loc: loc != first):
            try:
                push = self.render_fresh(alert, kind, loc)
            except errors.Invalid:  # e.g. too long for FCM, for an alert not sent by push
                continue
            words[loc] = model.Text(headline=push.title, description=push.body)
        return words

    def _render_generic(self, alert: model.Alert, kind: str, locale: str | None) -> Rendered:
        if not alert.texts:
            raise errors.Invalid("The order needs a template or texts.", field="texts")
        # The text closest to the recipient's locale, else to the fallbacks; laid out in its own
        # language when there is a layout for it, else in the recipient's usual fallback.
        key = self._closest_text(alert, locale)
        text = alert.texts[key]
        own = next((loc for loc in _chain(key) if (loc, GENERIC, kind) in self._files), None)
        loc = own or self.resolve_locale(locale, alert.locale, name=GENERIC, kind=kind)
        context = self._context(alert, loc) | {"text": _text_vars(text)}
        out = self._run(f"{loc}/{GENERIC}.{kind}.j2", context)
        return self._finish(_marked(alert, out, key), loc, kind, f"texts.{key}")

    def _closest_text(self, alert: model.Alert, locale: str | None) -> str:
        """The key of the text for a recipient in `locale`: for each candidate (fr-ca, fr, …) a text
        in exactly it, else one in a variety of it (fr-CA, fr-BE for fr); else the first text."""
        for code in self._candidates(locale, alert.locale):
            found = [key for key in alert.texts if code in _chain(key)]
            if found:
                return min(found, key=lambda key: _tag(key) != code)  # exactly it first
        return next(iter(alert.texts))

    def _candidates(self, *wanted: str | None) -> list[str]:
        """Each wanted tag then the default, each from most to least specific (RFC 4647 lookup)."""
        found: list[str] = []
        for tag in (*wanted, self.default_locale):
            for code in _chain(tag) if tag else ():
                if code not in found:
                    found.append(code)
        return found

    def _context(self, alert: model.Alert, locale: str) -> dict[str, Any]:
        return {
            "alert": {
                "event": alert.event,
                "severity": alert.severity,
                "urgency": alert.urgency,
                "certainty": alert.certainty,
                "expires": format_expires(alert.expires, alert.sent, locale, self.tz),
                "area": alert.area.description,
                "sender": alert.cell_name or alert.cell or alert.sender,  # "Préfecture du Rhône", not its id
                "status": alert.status.value,
                "msg_type": alert.msg_type,
                "identifier": alert.identifier,
            },
            "params": localized_params(alert.params, locale),
            "locale": locale,
        }

    def _run(self, path: str, context: dict[str, Any]) -> str:
        try:
            return self._env.get_template(path).render(context)
        except (jinja_errors.TemplateError, TypeError, ValueError, ArithmeticError) as exc:
            # A template that breaks (or escapes the sandbox) is refused at the order.
            raise errors.Invalid(f"Template {path} cannot be rendered: {exc}", field="template",
                                 template=path) from exc

    def _finish(self, out: str, locale: str, kind: str, field: str) -> Rendered:
        if kind is model.Kind.PUSH:
            return self._push(out, locale, field)
        body = " ".join(out.split())
        if not body:
            raise errors.Invalid("The message renders empty.", field=field, kind=kind, locale=locale)
        if kind is model.Kind.CELL_BROADCAST:
            return self._broadcast(body, locale, field)
        if kind is not model.Kind.SMS:
            return Rendered(locale, kind, "", body, size=len(body.encode()))
        segments = sms_segments(body)
        if segments > self.sms_max_segments:
            raise errors.MessageTooLong(
                f"The SMS in {locale!r} takes {segments} segments; at most {self.sms_max_segments}.",
                field=field, kind=kind, locale=locale, segments=segments, limit=self.sms_max_segments,
            )
        return Rendered(locale, kind, "", body, sms_encoding(body), segments, len(body.encode()))

    def _broadcast(self, body: str, locale: str, field: str) -> Rendered:
        try:
            pages = cbs.paginate(body)
        except errors.MessageTooLong as exc:
            raise errors.MessageTooLong(f"{exc.message[:-1]} in {locale!r}.", field=field,
                                        kind=model.Kind.CELL_BROADCAST, locale=locale, pages=exc.pages,
                                        limit=exc.limit) from None
        return Rendered(locale, model.Kind.CELL_BROADCAST, "", body, pages.encoding, len(pages.pages),
                        len(body.encode()))

    def _push(self, out: str, locale: str, field: str) -> Rendered:
        lines = [line for line in (" ".join(raw.split()) for raw in out.splitlines()) if line]
        if len(lines) < 2:
            raise errors.Invalid("The push message needs a title line and a body.", field=field,
                                 kind=model.Kind.PUSH, locale=locale)
        title, body = lines[0], "\n".join(lines[1:])
        size = push_size(title, body)
        if size > self.push_max_bytes:
            raise errors.MessageTooLong(
                f"The push message in {locale!r} is about {size} bytes; at most {self.push_max_bytes}.",
                field=field, kind=model.Kind.PUSH, locale=locale, size=size, limit=self.push_max_bytes,
            )
        return Rendered(locale, model.Kind.PUSH, title, body, size=size)


def check_order(renderer: Renderer, alert: model.Alert) -> list[Rendered]:
    """Every message the alert may need (each template locale × each of its channels); raises the
    first problem, with the field at fault, so an order is refused before any fan-out."""
    return [
        renderer.render_fresh(alert, kind, locale)
        for kind in alert.channels
        for locale in renderer.locales()
    ]


def _scan(root: pathlib.Path) -> frozenset[tuple[str, str, str]]:
    """(locale, name, kind) of every template under `root`; `_`-prefixed files are helpers."""
    if not root.is_dir():
        raise errors.ConfigError(f"template folder {root} does not exist")
    return frozenset(
        (folder.name, match["name"], model.kind(match["kind"]))
        for folder in root.iterdir()
        if folder.is_dir() and not folder.name.startswith((".", "_"))
        for file in folder.iterdir()
        if (match := _FILE.fullmatch(file.name))
    )


def _tag(locale: str) -> str:
    return locale.strip().replace("_", "-").lower()


def _chain(locale: str) -> list[str]:
    """`locale` and each shorter tag it falls back to: zh-Hant-TW → zh-hant-tw, zh-hant, zh; a
    singleton goes with the subtag after it (sr-Latn-x-ije → sr-latn-x-ije, sr-latn, sr)."""
    subtags, chain = _tag(locale).split("-"), []
    while subtags:
        chain.append("-".join(subtags))
        subtags.pop()
        if subtags and len(subtags[-1]) == 1:
            subtags.pop()
    return chain


def _text_vars(text: model.Text) -> dict[str, str]:
    instruction = "\n".join(" ".join(line.split()) for line in text.instruction.splitlines())
    return {
        "headline": _one_line(text.headline), "instruction": instruction, "description": _one_line(text.description),
    }


def _marked(alert: model.Alert, out: str, locale: str) -> str:
    """An exercise's text with the locale's word for exercise first (its first line: the push title)."""
    if alert.status is not model.Status.EXERCISE:
        return out
    word = EXERCISE.get(_tag(locale).split("-")[0], EXERCISE[EXERCISE_FALLBACK])
    text = out.lstrip()
    return text if text.startswith(word) else f"{word} - {text}"
