"""Logging in and out: the login form, a server-side session, logout."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import (
    HTMLResponse,
    RedirectResponse,
    Response,
)

from app.auth.throttle import TooManyFailuresError
from app.console import auth
from app.console.auth import Forbidden
from app.console.state import console_state
from app.console.web import (
    data_router,
    page_context,
    page_router,
    templates,
)

pages = page_router()
data = data_router()


@pages.get("/", response_class=HTMLResponse)
def home(request: Request,
         session: Annotated[auth.Session, Depends(auth.page("models"))]) -> Response:
    for page, path in (("models", "/console/models"), ("requests", "/console/forget-requests"),
                       ("audit", "/console/audit"), ("try", "/console/try")):
        if auth.may(request, session.principal, page):
            return RedirectResponse(path, status_code=303)
    raise Forbidden("your key holds no role that the console shows")


@pages.get("/login", response_class=HTMLResponse)
def login_form(request: Request,
               next: Annotated[str | None, Query(max_length=500)] = None) -> Response:
    return _login_page(request, next)


def _login_page(request: Request, next: str | None, error: str | None = None,
                status_code: int = 200) -> Response:
    # Not a route: the error text and status come from the login handler only, never
    # from the query string (a crafted link could otherwise put any text on the page).
    token = auth.new_login_token()
    # A Secure cookie set over plain HTTP is dropped by browsers (localhost aside): say so
    # here rather than let the login loop back to this form without a word.
    insecure_transport = (request.url.scheme == "http"
                          and console_state(request).settings.console_secure_cookie)
    response = templates.TemplateResponse(
        request, "login.html",
        page_context(request, login_token=token, next=auth.safe_next(next), error=error,
                 insecure_transport=insecure_transport),
        status_code=status_code,
    )
    _set_cookie(request, response, auth.LOGIN_COOKIE, token, max_age=3600)
    return response


@pages.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    form = await request.form()
    auth.check_same_origin(request)
    next_path = auth.safe_next(str(form.get("next") or ""))
    expected = request.cookies.get(auth.LOGIN_COOKIE)
    submitted = str(form.get("login_token") or "")
    if not expected or not auth.tokens_match(submitted, expected):
        return _login_page(request, next_path, "The login form expired; please try again.",
                           403)
    key = str(form.get("api_key") or "").strip()
    try:
        principal = await run_in_threadpool(auth.authenticate_key, request, key, True)
    except TooManyFailuresError as error:
        page = _login_page(request, next_path, "Too many failed logins from here; try again "
                           f"in {error.headers['Retry-After']} s.", 429)
        page.headers.update(error.headers)
        return page
    if principal is None:
        return _login_page(request, next_path, "That key does not open the console.", 401)
    token = await run_in_threadpool(auth.start_session, request, principal)
    response = RedirectResponse(next_path, status_code=303)
    _set_cookie(request, response, auth.SESSION_COOKIE, token,
                max_age=int(auth.session_lifetime(request).total_seconds()))
    response.delete_cookie(auth.LOGIN_COOKIE, path=auth.COOKIE_PATH)
    return response


@pages.post("/logout")
async def logout(request: Request) -> Response:
    form = await request.form()
    session = auth.current_session(request)
    if session is not None:
        auth.check_csrf(request, session, str(form.get("csrf_token") or ""))
        await run_in_threadpool(auth.end_session, request)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE, path=auth.COOKIE_PATH,
                           secure=console_state(request).settings.console_secure_cookie,
                           httponly=True, samesite="strict")
    return response


def _set_cookie(request: Request, response: Response, name: str, value: str,
                max_age: int) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path=auth.COOKIE_PATH, httponly=True, samesite="strict",
        secure=console_state(request).settings.console_secure_cookie,
    )
