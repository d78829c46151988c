"""How long and how much before sending (issue 12, point 5): the pure forecast, the segments it counts
from the texts, and the configuration of each channel's rate and prices."""

from __future__ import annotations

import datetime as dt

import pytest

from alertd import config, estimate, model, render
from alertd.web import views
from tests import helpers

NOW = helpers.START
K = model.Kind
SMS_PACE = config.Pace(rate=10.0, price_per_segment=0.05, currency="EUR")


def sms(*groups: tuple[int, str], pace: config.Pace = SMS_PACE) -> estimate.Planned:
    """An SMS channel reaching `n` recipients with `text`, for each (n, text)."""
    return estimate.Planned(K.SMS, pace, tuple(estimate.Group(n, render.sms_segments(text)) for n, text in groups))


def forecast(*planned: estimate.Planned, expires: dt.datetime | None = None) -> dict:
    return views.Estimate.of(estimate.estimate(planned, NOW, expires)).model_dump(mode="json")


@pytest.mark.parametrize(("text", "segments"), [
    ("a" * 160, 1),  # GSM-7: 160 characters in one SMS...
    ("a" * 161, 2),  # ...153 a part once split
    ("a" * 306, 2),
    ("a" * 307, 3),
    ("€" * 80, 1),  # the extension table's characters take two septets: 80 × 2 = 160
    ("€" * 81, 2),
    ("a" * 152 + "€" + "a" * 152, 3),  # an escape pair is never split across two parts (306 septets)
    ("Évacuez à pied, é è à ù Ç", 1),  # French accents in GSM-7...
    ("ç" * 70, 1),  # ...but not ç: UCS-2, 70 in one SMS
    ("ç" * 71, 2),  # 67 a part
    ("ç" * 135, 3),
])
def test_segments_are_counted_as_the_operator_pays_them(text, segments):
    assert forecast(sms((1000, text)))["channels"]["sms"]["segments"] == 1000 * segments


def test_time_to_the_last_message_and_the_cost_at_the_configured_rate_and_price():
    """One million single-segment SMS from one alphanumeric sender take about 28 h (PROVIDERS.md)."""
    line = forecast(sms((1_000_000, "Mise à l'abri immédiate.")))["channels"]["sms"]
    assert (line["recipients"], line["messages"], line["segments"]) == (1_000_000, 1_000_000, 1_000_000)
    assert line["seconds_to_last"] == 100_000.0 and estimate.duration(line["seconds_to_last"]) == "27 h 47 min"
    assert line["ends_at"] == (NOW + dt.timedelta(seconds=100_000)).isoformat()
    assert line["cost"] == {"amount": 50_000.0, "currency": "EUR"}


def test_accented_french_doubles_the_segments_the_time_and_the_cost():
    plain, accented = "Restez chez vous. " * 7, "Restez à l'abri, fermez portes et fenêtres. " * 3
    assert render.sms_encoding(plain) == "GSM-7" and render.sms_encoding(accented) == "UCS-2"
    lines = [forecast(sms((600, text)))["channels"]["sms"] for text in (plain, accented)]
    assert [(ln["segments"], ln["seconds_to_last"], ln["cost"]["amount"]) for ln in lines] == \
        [(600, 60.0, 30.0), (1200, 120.0, 60.0)]


def test_each_locale_counts_with_its_own_text():
    line = forecast(sms((100, "Abritez-vous."), (50, "ç" * 100)))["channels"]["sms"]
    assert (line["recipients"], line["segments"], line["seconds_to_last"]) == (150, 100 + 50 * 2, 20.0)


def test_a_price_per_message_counts_messages_and_a_price_per_segment_counts_only_on_sms():
    push = estimate.Planned(K.PUSH, config.Pace(rate=1000.0, price_per_segment=1.0, price_per_message=0.001,
                                                currency="EUR"), (estimate.Group(4000),))
    both = config.Pace(rate=10.0, price_per_segment=0.07, price_per_message=0.01, currency="USD")
    shown = forecast(push, sms((10, "x" * 200), pace=both))["channels"]
    assert shown["push"]["segments"] is None and shown["push"]["cost"] == {"amount": 4.0, "currency": "EUR"}
    assert shown["sms"]["cost"] == {"amount": 1.5, "currency": "USD"}  # 20 × 0.07 + 10 × 0.01


def test_no_price_no_cost():
    line = forecast(sms((10, "x"), pace=config.Pace(rate=10.0)))["channels"]["sms"]
    assert line["cost"] is None and line["seconds_to_last"] == 1.0


def test_a_fan_out_that_would_end_after_the_alert_expires_is_warned_of():
    planned = sms((36_000, "Évacuez."))  # one hour at 10 a second
    assert forecast(planned, expires=NOW + dt.timedelta(hours=2))["warnings"] == []
    (warning,) = forecast(planned, expires=NOW + dt.timedelta(minutes=30))["warnings"]
    assert (warning["code"], warning["channel"]) == ("ends-after-expiry", "sms")
    assert "36,000 segments" in warning["detail"] and "1 h" in warning["detail"]
    assert forecast(planned)["warnings"] == []  # an alert without `expires` never runs out


def test_a_default_rate_says_so_and_an_unknown_rate_gives_no_time():
    default = config.Pace(rate=10.0, rate_is_default=True)
    sirens = estimate.Planned(K.SIREN, config.Pace(), (estimate.Group(1),) * 6)
    shown = forecast(sms((5, "x"), pace=default), sirens, expires=NOW)
    assert [(w["code"], w["channel"]) for w in shown["warnings"]] == [
        ("default-rate", "sms"), ("ends-after-expiry", "sms"), ("rate-unknown", "siren"),
    ]
    assert shown["channels"]["sms"]["rate_is_default"] is True
    siren = shown["channels"]["siren"]
    assert (siren["recipients"], siren["messages"], siren["seconds_to_last"], siren["ends_at"]) == (6, 6, None, None)


# -- the configuration of rates and prices ------------------------------------------------------------


def channels(tmp_path, sms: str = "", push: str = "", siren: str = "", env=None):
    path = helpers.write_config(tmp_path, "http://127.0.0.1:9", 8080, sms=sms, push=push, siren=siren)
    return config.load(str(path), env=env or {}).channels


def test_rates_and_prices_are_read_and_never_reach_the_plugin(tmp_path):
    chans = channels(tmp_path, sms='rate = 30\nprice_per_segment = 0.0725\ncurrency = "eur"',
                     push="price_per_message = 0\ncurrency = 'EUR'", siren="rate = 2.5")
    assert chans["sms"].pace == config.Pace(rate=30.0, price_per_segment=0.0725, currency="EUR")
    assert chans["push"].pace == config.Pace(rate=10_000.0, rate_is_default=True, price_per_message=0.0,
                                             currency="EUR")
    assert chans["siren"].pace == config.Pace(rate=2.5)
    assert not set(config.PACE_KEYS) & {key for c in chans.values() for key in c.table}


def test_without_a_rate_the_documented_defaults_and_none_for_sirens(tmp_path):
    chans = channels(tmp_path, push="quota_per_minute = 60000")
    assert (chans["sms"].pace.rate, chans["sms"].pace.rate_is_default) == (10.0, True)
    assert (chans["push"].pace.rate, chans["push"].pace.rate_is_default) == (1000.0, True)
    assert (chans["siren"].pace.rate, chans["siren"].pace.rate_is_default) == (None, False)


def test_an_environment_variable_sets_a_rate(tmp_path):
    chans = channels(tmp_path, env={"ALERTD_CHANNELS__SMS__RATE": "100"})
    assert chans["sms"].pace == config.Pace(rate=100.0)


def test_bad_rates_and_prices_are_each_reported(tmp_path):
    path = helpers.write_config(tmp_path, "http://127.0.0.1:9", 8080, sms='rate = 0\ncurrency = "euros"',
                                push='price_per_message = 0.01', siren='rate = "fast"\nprice_per_segment = -1')
    problems = config.check(str(path), env={})
    assert "channels.sms.rate: must be positive, got 0" in problems
    assert any(p.startswith("channels.sms.currency: expected an ISO 4217") for p in problems)
    assert "channels.push.currency: required with a price (ISO 4217, e.g. EUR)" in problems
    assert any(p.startswith("channels.siren.rate: expected a number") for p in problems)
    assert "channels.siren.price_per_segment: must be zero or more, got -1" in problems
