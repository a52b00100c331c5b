"""The check a callback_url passes when a forget request is filed."""

from __future__ import annotations

from app.core.errors import InvalidInputError
from app.notifications.urls import CallbackRefused, check_for_settings


def check_callback_url(url: str, settings) -> None:
    """422 (field ``callback_url``) saying why the URL may not be called."""
    try:
        check_for_settings(url, settings)
    except CallbackRefused as error:
        raise InvalidInputError(f"callback_url {error}", "callback_url") from None
