"""Fake Twilio, FCM, siren-gateway and cell broadcast centre servers that behave like the real APIs,
on one port.

The real `twilio` and `firebase-admin` clients are pointed at them (each channel's `base_url`), so
tests, `alertd demo` and the benchmark exercise the real client libraries over loopback.
Run them with ``alertd fakes --port P`` or ``python -m alertd.fakes --port P``.
"""

from __future__ import annotations

from aiohttp import web

from alertd.fakes import cbc, common, fcm, siren, twilio


def build_app() -> web.Application:
    app = web.Application(client_max_size=8 * 1024 * 1024)
    common.add_control_routes(app, ["twilio", "fcm", "siren"])
    twilio.setup(app)
    fcm.setup(app)
    siren.setup(app)
    cbc.setup(app)
    return app


def serve(host: str = "127.0.0.1", port: int = 8900) -> None:
    web.run_app(build_app(), host=host, port=port, print=None, access_log=None)
