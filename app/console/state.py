"""What the console keeps per app: its settings, the session signer and the plot cache.

Made on first use, because the cache directory comes from the service context, which
the app builds only when it starts."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from fastapi import Request

from app.console.plots import PlotCache
from app.console.sessions import SessionSigner, load_or_create_secret
from app.console.settings import ConsoleSettings

_lock = threading.Lock()


@dataclass
class ConsoleState:
    settings: ConsoleSettings
    signer: SessionSigner
    plot_cache: PlotCache


def console_state(request: Request) -> ConsoleState:
    state = getattr(request.app.state, "console", None)
    if state is not None:
        return state
    with _lock:
        state = getattr(request.app.state, "console", None)
        if state is None:
            settings: ConsoleSettings = request.app.state.console_settings
            cache_dir = request.app.state.ctx.settings.cache_dir
            state = ConsoleState(
                settings=settings,
                signer=SessionSigner(load_or_create_secret(settings, cache_dir),
                                     settings.console_session_hours * 3600),
                plot_cache=PlotCache(cache_dir / "console-plots"),
            )
            request.app.state.console = state
    return state
