"""The composition root: configuration → store, channels, renderer, dispatcher → aiohttp app.

The only module that knows the concrete store and channel classes (through the URL and the entry
points). Background work lives in `cleanup_ctx`, so it stops with the app; it begins only once the
app is known to listen (`listening`), never before: a provider's receipts for what it sends must
find the port open, and Twilio posts each status callback once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import errno
import resource
from collections.abc import Callable

import structlog
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from alertd import (
    channels,
    config as config_mod,
    dispatcher,
    health,
    housekeeping,
    metrics,
    model,
    progress,
    quota,
    render,
    retry,
    store,
    systemd,
    web as web_mod,
)
from alertd.channels import remote
from alertd.web import quota as web_quota

log = structlog.get_logger("alertd.app")

HOUSEKEEPING_SECONDS = 1.0
FD_RESERVE = 256  # descriptors kept from clients: the store, provider connections, sending processes' pipes
DESCRIPTORS_WANTED = 65536  # the soft limit sought when the hard one is unlimited
# What asyncio's accept loop reports as "out of system resource" (descriptors, or kernel memory).
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Workers:
    """The background work of an app: it begins once the app listens, it ends with the app."""

    def __init__(self) -> None:
        self.listening = asyncio.Event()
        self.told = False  # by `listening`, whose caller then hears why the work cannot begin
        self.begun: asyncio.Task | None = None  # the beginning, once the app has started
        self.stack = contextlib.AsyncExitStack()  # how to end what has begun, last begun first


WORKERS = web.AppKey("workers", Workers)


def build_channels(cfg: config_mod.Config) -> dict[str, channels.Channel]:
    built: dict[str, channels.Channel] = {}
    for name, section in cfg.channels.items():
        context = channels.Context(public_url=cfg.server.public_url, name=name)
        if section.processes:  # the provider calls on other cores
            built[name] = remote.Remote(
                section.plugin, section.table, context, section.processes, cfg.log.level, cfg.log.format
            )
        else:
            built[name] = channels.load(section.plugin)(section.settings, context)
    return built


def build_dispatcher(
    cfg: config_mod.Config, db: store.Store, clock: Callable[[], dt.datetime]
) -> dispatcher.Dispatcher:
    d = cfg.dispatcher
    return dispatcher.Dispatcher(
        db,
        build_channels(cfg),
        render.Renderer(
            cfg.render.templates, cfg.render.default_locale, cfg.render.sms_max_segments,
            cfg.render.push_max_bytes, cfg.server.display_timezone,
        ),
        retry.Policy(d.max_attempts, d.backoff_base, d.backoff_max),
        dispatcher.Settings(
            batch_size=d.batch_size, lease=dt.timedelta(seconds=d.lease_seconds),
            plan_chunk=d.plan_chunk, test_recipients=cfg.alerts.test_recipients,
            paces={name: section.pace for name, section in cfg.channels.items()},
            failover=health.Rules(d.failover_failures, d.failover_after, d.failover_cooldown, d.failover_slow),
        ),
        clock=clock,
    )


def build(
    cfg: config_mod.Config, *, clock: Callable[[], dt.datetime] = model.utcnow, run_workers: bool = True
) -> web.Application:
    """The daemon's aiohttp app. Its background work (sending, housekeeping) begins once it listens:
    tell it with `listening(app)` once its site has started, as `alertd serve` does; an app never told
    begins at its first answer, which proves it listens. With `run_workers=False` nothing is sent
    in the background: the caller drains with `app[web.DISPATCHER].run_until_idle()` (tests)."""
    app = web.Application(
        middlewares=[web_mod.problems, web_mod.deadlines, web_mod.first], client_max_size=4 * 1024 * 1024
    )
    db = store.open_store(cfg.store.url)
    disp = build_dispatcher(cfg, db, clock)
    app[web_mod.STORE] = db
    app[web_mod.DISPATCHER] = disp
    app[web_mod.RENDERER] = disp.renderer
    app[web_mod.CLOCK] = clock
    app[web_mod.RECORDER] = progress.Recorder(db, clock)
    app[web_mod.METRICS] = disp.metrics = metrics.Metrics(disp.channels)
    app[web_mod.AUTH_FAILURES] = web_mod.auth_failures()
    app[web_mod.RECEIPTS_REFUSED] = web_mod.receipts_refused()
    app.on_response_prepare.append(web_mod.edges)
    app.on_shutdown.append(_end_streams)  # before the server waits for its handlers to finish
    app[web_mod.SETTINGS] = web_mod.Settings(
        cfg.server.public_url, max_streams_per_token=cfg.server.max_streams_per_token,
        cap_sent_skew=dt.timedelta(hours=cfg.alerts.cap_sent_skew_hours),
    )
    app[web_mod.STREAMS] = collections.Counter()
    app[web_quota.QUOTA] = quota.Quota()
    app[web_mod.CONNECTIONS] = web_mod.Connections(limits(cfg.server), app[web_mod.METRICS])
    app.add_routes(web_mod.routes())
    app[WORKERS] = Workers()
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_dispatcher_ctx if run_workers else _channels_ctx)
    if run_workers:
        app.on_response_prepare.append(_answered)
    if run_workers and cfg.systemd.watchdog:
        app.cleanup_ctx.append(_systemd_ctx)
    return app


async def _store_ctx(app: web.Application):
    await app[web_mod.STORE].open()
    yield
    await app[web_mod.STORE].close()


async def _end_streams(app: web.Application) -> None:
    app[web_mod.RECORDER].end_streams()


async def _channels_ctx(app: web.Application):
    disp = app[web_mod.DISPATCHER]
    for channel in disp.channels.values():
        await channel.start()
    yield
    await disp.interrupt()
    for channel in disp.channels.values():
        await channel.close()


async def listening(app: web.Application) -> None:
    """Say that the app's port accepts connections: the background work begins. Returns once it has
    begun (the sending processes started …), raising what kept it from beginning."""
    workers = app[WORKERS]
    workers.told = True
    workers.listening.set()
    if workers.begun is not None:
        await asyncio.shield(workers.begun)


async def _answered(request: web.Request, response: web.StreamResponse) -> None:
    request.app[WORKERS].listening.set()


async def _dispatcher_ctx(app: web.Application):
    workers = app[WORKERS]
    workers.begun = asyncio.create_task(_begin(app, workers), name="workers")
    yield
    workers.begun.cancel()  # if it is still waiting, or starting the channels
    await asyncio.gather(workers.begun, return_exceptions=True)
    await workers.stack.aclose()  # what has begun ends, the calls on the wire answered and recorded


async def _begin(app: web.Application, workers: Workers) -> None:
    await workers.listening.wait()
    try:
        await _begin_listening(app, workers.stack)
    except Exception as exc:
        if not workers.told:  # nobody waits for the beginning: this line is all that will say it
            log.error("the background work cannot begin", error=f"{type(exc).__name__}: {exc}")
        raise


async def _begin_listening(app: web.Application, stack: contextlib.AsyncExitStack) -> None:
    disp = app[web_mod.DISPATCHER]
    stack.push_async_callback(disp.stop)  # first: it closes the channels a failed start left open
    await disp.store.listen(disp.notice)  # other instances' plans and cancels (PostgreSQL)
    await disp.start()
    await app[web_mod.RECORDER].start()
    stack.push_async_callback(app[web_mod.RECORDER].stop)
    running: set[asyncio.Task] = set()

    async def housekeep() -> None:
        task = asyncio.current_task()
        assert task is not None, "housekeeping runs in a task of its own"
        running.add(task)
        try:
            await housekeeping.run(disp)
        finally:
            running.discard(task)

    scheduler = AsyncIOScheduler(timezone="UTC")
    scheduler.add_job(
        housekeep, "interval", seconds=HOUSEKEEPING_SECONDS, id="housekeeping", max_instances=1, coalesce=True,
    )
    scheduler.start()

    async def end_housekeeping() -> None:
        # A pass under way ends on its own before the store closes: the scheduler's shutdown would
        # cancel it (logged as a failed job), so it is paused first and shut down once idle.
        scheduler.pause()
        await asyncio.gather(*running, return_exceptions=True)
        scheduler.shutdown(wait=False)

    stack.push_async_callback(end_housekeeping)


async def _systemd_ctx(app: web.Application):
    async def alive() -> None:
        await app[web_mod.STORE].ping()

    task = asyncio.create_task(systemd.watchdog_task(alive))
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


# -- the server: its connections under `web.Connections`' limits ------------------------------------


def limits(server: config_mod.Server) -> web_mod.Limits:
    return web_mod.Limits(server.keepalive_timeout, server.header_timeout, server.body_timeout, server.max_connections)


def runner(app: web.Application) -> web.AppRunner:
    """The runner of the daemon's app: idle keep-alive connections close after `keepalive_timeout`.
    aiohttp's lingering close stays (a body left unread is drained for up to 10 s before the close),
    so that a client still sending an oversized body reads its 413 instead of a reset."""
    return web.AppRunner(app, access_log=None, **_handler_settings(app[web_mod.CONNECTIONS].limits))


def _handler_settings(limits: web_mod.Limits) -> dict:
    return {"keepalive_timeout": limits.keepalive_timeout}


class Site(web.TCPSite):
    """`web.TCPSite`, its connections handled by `web.Connection` under `web.Connections`' limits."""

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        assert isinstance(self._runner, web.AppRunner), "a Site serves an application"
        connections = self._runner.app[web_mod.CONNECTIONS]
        connections.fit(descriptors() - FD_RESERVE)
        watch_accepts(loop, connections)
        server, settings = self._runner.server, _handler_settings(connections.limits)

        def protocol() -> web_mod.Connection:
            return web_mod.Connection(connections, server, loop=loop, access_log=None, **settings)

        self._server = await loop.create_server(
            protocol, self._host, self._port, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port,
        )


def descriptors() -> int:
    """The process's file descriptors: the soft limit, raised first to the hard one (LimitNOFILE=
    in the unit; systemd leaves the soft one at 1,024 for programs that use select())."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = DESCRIPTORS_WANTED if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    return DESCRIPTORS_WANTED if soft == resource.RLIM_INFINITY else soft


def watch_accepts(loop: asyncio.AbstractEventLoop, connections: web_mod.Connections) -> None:
    """asyncio reports each accept that fails for want of descriptors to the loop's exception
    handler, up to the backlog's length per wake-up (thousands of lines a second), and retries a
    second later: count them, close an idle connection for each, say so once per interval."""
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in OUT_OF_RESOURCES and "accept" in context.get("message", ""):
            connections.accept_failed(errno.errorcode[exc.errno])
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
