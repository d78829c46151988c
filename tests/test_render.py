"""Rendering: the shipped template set, locale fallback, the sandbox and the channel limits."""

from __future__ import annotations

import dataclasses
import datetime as dt
import pathlib

import pytest

from alertd import config, errors, model, render

TEMPLATES = pathlib.Path(config.default_templates())
SENT = dt.datetime(2025, 3, 12, 14, 0, tzinfo=dt.UTC)  # 15h00 in Paris (UTC+1 in March)
FULL_PARAMS = {"place": "Lyon 7e", "reason": "Nuage toxique", "until": "18h30", "shelter": "gymnase Jean Jaurès"}
SMS, PUSH, SIREN = model.Kind.SMS, model.Kind.PUSH, model.Kind.SIREN


def make_alert(**overrides) -> model.Alert:
    values = dict(
        id="a1", identifier="urn:x", sender="Préfecture du Rhône", sent=SENT,
        status=model.Status.ACTUAL, event="Accident industriel", urgency="Immediate",
        severity="Extreme", certainty="Observed", area=model.Area(("69387",), "Lyon 7e"),
        channels=(SMS, PUSH, SIREN), expires=SENT + dt.timedelta(hours=2, minutes=30),
        template="shelter_in_place", params={},
    )
    return model.Alert(**(values | overrides))


@pytest.fixture(scope="module")
def renderer() -> render.Renderer:
    return render.Renderer(TEMPLATES)


def write_templates(root: pathlib.Path, files: dict[str, str]) -> pathlib.Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


# -- the shipped template set ---------------------------------------------------------------------


def test_the_shipped_set_is_complete(renderer):
    assert renderer.locales() == ["ar", "en", "es", "fr"]
    assert renderer.templates() == ["all_clear", "evacuate", "shelter_in_place", "test"]


@pytest.mark.parametrize("locale", ["fr", "en", "es", "ar"])
@pytest.mark.parametrize("name", ["shelter_in_place", "evacuate", "all_clear", "test"])
@pytest.mark.parametrize("params", [FULL_PARAMS, {}], ids=["params", "no-params"])
def test_every_template_renders_in_every_locale_and_kind(renderer, locale, name, params):
    alert = make_alert(template=name, params=params)
    for kind in model.Kind:
        out = renderer.render_fresh(alert, kind, locale)
        text = out.title + "\n" + out.body
        assert (out.locale, out.kind) == (locale, kind)
        assert out.body and "None" not in text and "{" not in text and " - ." not in text
        assert ("Lyon 7e" in text) == bool(params)
        if kind is SMS:
            assert out.segments <= (3 if locale == "ar" else 2), out.body
            assert out.encoding == ("UCS-2" if locale == "ar" else "GSM-7"), out.body
        if kind is PUSH:
            assert out.title and "\n" not in out.title and out.size < 2048


def test_french_shelter_in_place_reads_as_expected(renderer):
    out = renderer.render_fresh(make_alert(params={"place": "Lyon 7e"}), SMS, "fr")
    assert out.body == (
        "ALERTE - Lyon 7e. Mettez-vous à l'abri immédiatement dans un lieu clos et restez-y "
        "jusqu'à nouvel ordre. N'allez pas chercher vos enfants à l'école. Limitez vos appels."
    )
    assert (out.encoding, out.segments) == ("GSM-7", 2)


def test_push_title_is_the_first_line_and_the_body_the_rest(renderer):
    out = renderer.render_fresh(make_alert(params={"place": "Lyon 7e", "reason": "Nuage toxique"}), PUSH, "fr")
    assert out.title == "Mise à l'abri immédiate - Lyon 7e"
    lines = out.body.splitlines()
    assert lines[0] == "Nuage toxique."
    assert "Message valable jusqu'à 17h30." in lines and lines[-1] == "Préfecture du Rhône"
    assert out.size == render.push_size(out.title, out.body)


def test_expiry_on_another_day_shows_the_date(renderer):
    alert = make_alert(expires=SENT + dt.timedelta(days=1))
    assert "Message valable jusqu'au 13/03 à 15h00." in renderer.render_fresh(alert, PUSH, "fr").body
    assert "This message is valid until 15:00 on 13/03." in renderer.render_fresh(alert, PUSH, "en").body


def test_exercises_are_marked_in_every_kind(renderer):
    alert = make_alert(status=model.Status.EXERCISE, template="evacuate")
    assert renderer.render_fresh(alert, SMS, "fr").body.startswith("EXERCICE - ALERTE.")
    assert renderer.render_fresh(alert, PUSH, "en").title.startswith("EXERCISE - ")
    assert renderer.render_fresh(alert, SIREN, "es").body.startswith("SIMULACRO - ")


def test_a_param_suffixed_with_a_locale_overrides_it_in_that_locale(renderer):
    alert = make_alert(params={"reason": "Nuage toxique", "reason_en": "Toxic cloud"})
    assert "Toxic cloud." in renderer.render_fresh(alert, SMS, "en").body
    assert "Nuage toxique." in renderer.render_fresh(alert, SMS, "fr").body


def test_a_param_cannot_add_a_line_to_a_push(renderer):
    out = renderer.render_fresh(make_alert(params={"place": "Lyon\nFaux titre"}), PUSH, "fr")
    assert out.title == "Mise à l'abri immédiate - Lyon Faux titre"


# -- free texts ------------------------------------------------------------------------------------


def test_generic_layout_renders_free_texts_in_the_recipients_locale(renderer):
    texts = {"fr": model.Text("Crue de la Saône", "Montez dans les étages."), "en": model.Text("Flood", "Go upstairs")}
    alert = make_alert(template=None, texts=texts, locale="fr")
    sms = renderer.render_fresh(alert, SMS, "en-GB")
    assert (sms.locale, sms.body) == ("en", "Flood. Go upstairs.")
    push = renderer.render_fresh(alert, PUSH, "fr")
    assert (push.title, push.body.splitlines()[0]) == ("Crue de la Saône", "Montez dans les étages.")
    assert renderer.render_fresh(alert, SIREN, "ar").body == "Crue de la Saône. Montez dans les étages."


def test_generic_layout_falls_back_to_any_text_present(renderer):
    alert = make_alert(template=None, texts={"es": model.Text("Inundación", "Suba a los pisos altos.")})
    out = renderer.render_fresh(alert, SMS, "de")
    assert (out.locale, out.body) == ("es", "Inundación. Suba a los pisos altos.")
    german = make_alert(template=None, texts={"de": model.Text("Hochwasser", "Gehen Sie nach oben.")})
    out = renderer.render_fresh(german, PUSH, "en")  # no German layout: the recipient's one
    assert (out.locale, out.title, out.body.splitlines()[0]) == ("en", "Hochwasser", "Gehen Sie nach oben.")


def test_an_order_with_neither_template_nor_texts_is_invalid(renderer):
    with pytest.raises(errors.Invalid) as caught:
        renderer.render_fresh(make_alert(template=None), SMS, "fr")
    assert caught.value.field == "texts"


# -- locale fallback ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "wanted, fallback, expected",
    [("en", "es", "en"), ("fr-FR", None, "fr"), ("EN_gb", "fr", "en"), ("de", "es", "es"),
     ("de", None, "fr"), ("de", "it", "fr"), (None, None, "fr"), ("ar-MA", None, "ar")],
)
def test_locale_fallback_order(renderer, wanted, fallback, expected):
    assert renderer.resolve_locale(wanted, fallback) == expected


def test_a_locale_without_the_template_falls_back_to_the_alerts_then_the_default(tmp_path):
    root = write_templates(tmp_path, {
        "fr/flood.sms.j2": "Crue", "es/flood.sms.j2": "Inundación", "en/other.sms.j2": "Other",
    })
    renderer = render.Renderer(root)
    assert renderer.render_fresh(make_alert(template="flood", locale="es"), SMS, "en").body == "Inundación"
    assert renderer.render_fresh(make_alert(template="flood", locale="de"), SMS, "en").body == "Crue"
    assert renderer.resolve_locale("en", None, name="flood", kind=SMS) == "fr"


# -- unknown templates and limits --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["flood", "generic", "_lib", "../fr/test", "Test"])
def test_an_unknown_template_is_refused_on_the_template_field(renderer, name):
    with pytest.raises(errors.UnknownTemplate) as caught:
        renderer.render_fresh(make_alert(template=name), SMS, "fr")
    assert caught.value.field == "template"


def test_a_template_missing_for_a_kind_is_refused(tmp_path):
    renderer = render.Renderer(write_templates(tmp_path, {"fr/flood.sms.j2": "Crue"}))
    with pytest.raises(errors.UnknownTemplate) as caught:
        render.check_order(renderer, make_alert(template="flood"))
    assert caught.value.field == "template"


def test_a_too_long_sms_is_refused_with_the_field_at_fault(renderer):
    with pytest.raises(errors.MessageTooLong) as caught:
        renderer.render_fresh(make_alert(params={"reason": "x" * 400}), SMS, "fr")
    assert (caught.value.field, caught.value.segments, caught.value.limit) == ("params", 4, 3)
    texts = {"fr": model.Text("Crue", "Montez. " * 80)}
    with pytest.raises(errors.MessageTooLong) as caught:
        renderer.render_fresh(make_alert(template=None, texts=texts), SMS, "fr")
    assert caught.value.field == "texts.fr"


def test_the_sms_limit_is_configurable():
    strict = render.Renderer(TEMPLATES, sms_max_segments=1)
    with pytest.raises(errors.MessageTooLong):
        strict.render_fresh(make_alert(params=FULL_PARAMS), SMS, "fr")


def test_a_too_large_push_is_refused(renderer):
    with pytest.raises(errors.MessageTooLong) as caught:
        renderer.render_fresh(make_alert(params={"reason": "é" * 2000}), PUSH, "fr")
    assert caught.value.field == "params" and caught.value.size > 4096
    small = render.Renderer(TEMPLATES, push_max_bytes=900)
    with pytest.raises(errors.MessageTooLong):
        small.render_fresh(make_alert(params=FULL_PARAMS), PUSH, "fr")


def test_check_order_renders_every_locale_of_every_channel(renderer):
    out = render.check_order(renderer, make_alert(params=FULL_PARAMS, channels=(SMS, PUSH)))
    assert [(r.kind, r.locale) for r in out] == [(k, loc) for k in (SMS, PUSH) for loc in ["ar", "en", "es", "fr"]]
    with pytest.raises(errors.MessageTooLong) as caught:
        render.check_order(renderer, make_alert(params={"place": "Lyon " * 30}))
    assert caught.value.field == "params"


def test_renders_are_remembered_per_alert_kind_and_locale(renderer):
    alert = make_alert(id="cached")
    first = renderer.render(alert, SMS, "fr")
    assert renderer.render(alert, SMS, "fr") is first
    assert renderer.render(alert, SMS, "en").locale == "en"
    assert renderer.render(dataclasses.replace(alert, id="other", template="evacuate"), SMS, "fr") != first


# -- the sandbox ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["{{ 7*7 }}", "{% if true %}yes{% endif %}", "{{ ''.__class__ }}"])
def test_params_are_data_not_code(renderer, value):
    out = renderer.render_fresh(make_alert(params={"place": value}), SIREN, "fr")
    assert value in out.body


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ params.__class__ }}",
        "{{ alert.update({'sender': 'x'}) }}",
        "{{ cycler.__init__.__globals__ }}",
    ],
)
def test_a_malicious_template_is_invalid(tmp_path, source):
    renderer = render.Renderer(write_templates(tmp_path, {"fr/evil.sms.j2": f"Alerte {source}"}))
    with pytest.raises(errors.Invalid) as caught:
        renderer.render_fresh(make_alert(template="evil"), SMS, "fr")
    assert caught.value.field == "template"


def test_a_misspelt_top_level_name_is_invalid_but_a_missing_param_is_empty(tmp_path):
    root = write_templates(tmp_path, {"fr/typo.sms.j2": "Alerte {{ alrt.event }}",
                                      "fr/ok.sms.j2": "A{{ params.nope.deeper }}B"})
    renderer = render.Renderer(root)
    with pytest.raises(errors.Invalid):
        renderer.render_fresh(make_alert(template="typo"), SMS, "fr")
    assert renderer.render_fresh(make_alert(template="ok"), SMS, "fr").body == "AB"


def test_a_template_folder_without_the_default_locale_is_a_config_error(tmp_path):
    with pytest.raises(errors.ConfigError):
        render.Renderer(write_templates(tmp_path, {"en/x.sms.j2": "x"}))


# -- SMS arithmetic -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, encoding, segments",
    [
        ("a" * 160, "GSM-7", 1),
        ("a" * 161, "GSM-7", 2),
        ("a" * 306, "GSM-7", 2),
        ("a" * 307, "GSM-7", 3),
        ("€" * 80, "GSM-7", 1),
        ("€" + "a" * 159, "GSM-7", 2),
        ("a" * 152 + "€" + "a" * 7, "GSM-7", 2),  # the escape pair moves whole to the second part
        ("a" * 152 + "€" + "a" * 152, "GSM-7", 3),
        ("à l'école, Écoutez", "GSM-7", 1),
        ("ç" * 70, "UCS-2", 1),
        ("ç" * 71, "UCS-2", 2),
        ("ê" * 134, "UCS-2", 2),
        ("ê" * 135, "UCS-2", 3),
        ("🚨" * 35, "UCS-2", 1),  # two UTF-16 units each
        ("🚨" * 36, "UCS-2", 2),
        ("إنذار" * 14, "UCS-2", 1),
    ],
)
def test_sms_segments(text, encoding, segments):
    assert (render.sms_encoding(text), render.sms_segments(text)) == (encoding, segments)


# -- extended language tags (RFC 5646) ---------------------------------------------------------------


@pytest.mark.parametrize(
    "wanted, fallback, expected",
    [("es-419", None, "es"), ("fr-CA", "en", "fr"), ("zh-Hant-TW", "en", "en"), ("zh-Hant-TW", None, "fr"),
     ("sr-Latn-RS", "es-419", "es"), ("en-x-private", None, "en")],
)
def test_an_extended_tag_falls_back_to_its_closest_locale(renderer, wanted, fallback, expected):
    assert renderer.resolve_locale(wanted, fallback) == expected


def test_a_tag_is_tried_from_its_most_to_its_least_specific_form(tmp_path):
    root = write_templates(tmp_path, {
        "fr/flood.sms.j2": "Crue", "zh/flood.sms.j2": "洪水 (zh)", "zh-hant/flood.sms.j2": "洪水 (zh-Hant)",
    })
    renderer = render.Renderer(root)
    alert = make_alert(template="flood", locale="fr")
    assert renderer.render_fresh(alert, SMS, "zh-Hant-TW").body == "洪水 (zh-Hant)"
    assert renderer.render_fresh(alert, SMS, "zh-Hans-CN").body == "洪水 (zh)"
    assert renderer.render_fresh(alert, SMS, "fr-CA").body == "Crue"


def test_free_texts_go_to_the_closest_language_first(renderer):
    texts = {"fr": model.Text("Crue", "Montez."), "fr-CA": model.Text("Crue printanière", "Montez à l'étage."),
             "es-419": model.Text("Inundación", "Suba.")}
    alert = make_alert(template=None, texts=texts, locale="fr")
    assert renderer.render_fresh(alert, SMS, "fr-CA").body == "Crue printanière. Montez à l'étage."
    assert renderer.render_fresh(alert, SMS, "fr-BE").body == "Crue. Montez."
    assert renderer.render_fresh(alert, SMS, "es-MX").body == "Inundación. Suba."
    out = renderer.render_fresh(alert, PUSH, "es-419")
    assert (out.locale, out.title) == ("es", "Inundación")  # laid out in the Spanish layout
    canadian = make_alert(template=None, texts={"en": model.Text("Flood", "Go up."), "fr-CA": texts["fr-CA"]})
    assert renderer.render_fresh(canadian, SMS, "fr").body == "Crue printanière. Montez à l'étage."


# -- the words of a template alert, for its CAP document ----------------------------------------------


def test_cap_texts_are_the_push_messages_of_each_locale_the_alert_s_own_first(renderer):
    alert = make_alert(params=FULL_PARAMS, locale="en-GB", channels=(SMS,))
    words = renderer.cap_texts(alert)
    assert list(words) == ["en", "ar", "es", "fr"]
    for locale, text in words.items():
        push = renderer.render_fresh(alert, PUSH, locale)
        assert (text.headline, text.description, text.instruction) == (push.title, push.body, "")
    assert words["fr"].headline == "Mise à l'abri immédiate - Lyon 7e"
    assert renderer.cap_texts(make_alert(template=None, texts={"fr": model.Text("Crue")})) == {}


def test_cap_texts_leave_out_a_locale_whose_push_does_not_render(tmp_path):
    root = write_templates(tmp_path, {
        "fr/flood.sms.j2": "Crue", "fr/flood.push.j2": "Crue\n" + "très long " * 500,
        "en/flood.sms.j2": "Flood", "en/flood.push.j2": "Flood\nGo upstairs.",
    })
    words = render.Renderer(root).cap_texts(make_alert(template="flood", locale="fr", channels=(SMS,)))
    assert words == {"en": model.Text(headline="Flood", description="Go upstairs.")}
