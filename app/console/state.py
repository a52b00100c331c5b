"""What the console keeps per app: its settings and the plot cache.

Made on first use, because the cache directory comes from the service context, which
the app builds only when it starts."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from fastapi import Request

from app.console.plots import PlotCache
from app.console.settings import ConsoleSettings

_lock = threading.Lock()


@dataclass
class ConsoleState:
    settings: ConsoleSettings
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
            state = ConsoleState(settings=settings,
                                 plot_cache=PlotCache(cache_dir / "console-plots"))
            request.app.state.console = state
    return state
