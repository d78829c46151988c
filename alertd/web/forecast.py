"""How long and how much an alert would take (`estimate`), gathered for the API: whom it would reach
now on each channel, by locale, and the SMS segments of the text each locale gets."""

from __future__ import annotations

from aiohttp import web

from alertd import config, estimate, model, planner, web as web_mod


async def forecast(request: web.Request, alert: model.Alert) -> estimate.Estimate:
    dispatcher = request.app[web_mod.DISPATCHER]
    route = planner.routes(alert, dispatcher.kinds())
    reached = await planner.reach_by_locale(request.app[web_mod.STORE], alert, route,
                                            dispatcher.settings.test_recipients, dispatcher.broadcasts())
    planned = [
        estimate.Planned(kind, dispatcher.settings.paces.get(route[kind], config.Pace()),
                         _groups(request, alert, kind, reached[str(kind)]))
        for kind in alert.channels
    ]
    return estimate.estimate(planned, web_mod.now(request), alert.expires)


def _groups(request: web.Request, alert: model.Alert, kind: str, by_locale: dict[str, int]
            ) -> tuple[estimate.Group, ...]:
    if kind is not model.Kind.SMS:
        return tuple(estimate.Group(n) for n in by_locale.values())
    renderer = request.app[web_mod.RENDERER]  # the text closest to each locale, as the dispatcher picks it
    return tuple(estimate.Group(n, renderer.render_fresh(alert, kind, locale or None).segments)
                 for locale, n in by_locale.items())
