"""Who is calling: every handler's identity, resolved once per event on the server.

`ui_errors` (ui/common.py) wraps every handler with `with_identity`,
which adds two parameters Gradio fills in itself (a `gr.Request` and a
`gr.OAuthProfile | None`) and sets the caller for the call. Handlers then ask
`me()`, and open datasets only through `open_store(name, action)`, which runs
`dragonclf.access.check`. Code that runs in an event without the wrapper (a nested
call, a lambda) gets the caller from the event Gradio is running; with no event at
all it refuses (fail closed).
"""

from __future__ import annotations

import contextvars
import inspect
import os
import time
import typing

import gradio as gr

from dragonclf import access, quotas
from dragonclf.errors import DragonError
from dragonclf.identity import LOCAL, OAUTH_VARS, Identity, SignIn
from dragonclf.store import Store

_caller: contextvars.ContextVar[Identity | None] = contextvars.ContextVar("dragonclf_caller", default=None)
_sign_in: list[SignIn] = []


def configure(sign_in: SignIn) -> SignIn:
    """Set how this server identifies people (app.launch_options calls it before serving)."""
    _sign_in[:] = [sign_in]
    return sign_in


def sign_in() -> SignIn:
    if not _sign_in:
        configure(SignIn.from_env())  # raises on a half-configured sign-in: nothing is served
    return _sign_in[0]


def oauth_enabled() -> bool:
    """A Space with `hf_oauth: true`: show the 'Sign in with Hugging Face' button.

    Gradio mounts the real OAuth routes only when SYSTEM=spaces (the platform sets it); elsewhere a
    login button would mount mocked routes that need a local Hugging Face login."""
    return (os.environ.get("SYSTEM") == "spaces" and bool(os.environ.get("SPACE_ID"))
            and all(os.environ.get(v) for v in OAUTH_VARS))


def me() -> Identity:
    """The caller: set by the handler's wrapper, else read from the event Gradio is running (closures, lambdas)."""
    who = _caller.get()
    if who is None:
        from gradio.context import LocalContext  # gradio sets it for every event it runs

        request = LocalContext.request.get(None)
        who = identify(request, _session_profile(request))
    return who


def _session_profile(request) -> dict | None:
    """The signed-in Hugging Face profile in the request's OAuth session (the form gradio.oauth stores)."""
    try:
        info = request.session.get("oauth_info") if request is not None else None
    except (AssertionError, AttributeError):  # no session middleware: nobody signs in with OAuth here
        return None
    if not info or float(info.get("expires_at") or 0) < time.time():
        return None
    return info.get("userinfo")


def identify(request: gr.Request | None, profile) -> Identity:
    if request is None:
        raise DragonError("Who is asking is unknown here; reload the page.")
    who = sign_in().identify(username=getattr(request, "username", None), profile=profile,
                             session=getattr(request, "session_hash", None))
    quotas.touch(who)
    return who


def open_store(name: str | None, action: str = "read") -> Store:
    """Dataset `name` for the caller, after the permission check for `action`."""
    if not name:
        raise DragonError("Choose a dataset first.")
    return Store.open(access.check(me(), name, action))


def dataset_for(name: str | None, action: str = "read") -> str:
    """The folder name of dataset `name` after the permission check (for model lookups)."""
    if not name:
        raise DragonError("Choose a dataset first.")
    return access.check(me(), name, action)


def with_identity(fn, wrapper) -> None:
    """Give `wrapper` (which calls `fn`) the two extra parameters Gradio fills: request and OAuth profile."""
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    n = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
    extra = [inspect.Parameter("dragonclf_request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                               annotation=gr.Request),
             inspect.Parameter("dragonclf_profile", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                               annotation=gr.OAuthProfile | None)]
    wrapper.__signature__ = sig.replace(parameters=params[:n] + extra + params[n:])
    try:  # Gradio reads the hints to find special parameters (gr.SelectData, ...): give it resolved ones
        hints = typing.get_type_hints(fn)
    except (NameError, TypeError):
        hints = {}
    wrapper.__annotations__ = {**hints, "dragonclf_request": gr.Request, "dragonclf_profile": gr.OAuthProfile | None}


def split_call(args: tuple) -> tuple[tuple, Identity | None]:
    """(the handler's own arguments, the caller) from a call where Gradio put a request and a profile in."""
    at = next((i for i, a in enumerate(args) if isinstance(a, gr.Request)), None)
    if at is None:
        return args, None
    return args[:at] + args[at + 2:], identify(args[at], args[at + 1] if at + 1 < len(args) else None)


def run_as(who: Identity | None, call):
    """Run `call()` as `who` (or as the caller around it, when None)."""
    if who is None:
        return call()
    token = _caller.set(who)
    try:
        return call()
    finally:
        _caller.reset(token)


def steps_as(who: Identity | None, steps):
    """Yield a generator handler's steps, each run as `who` (or the caller around it); close it on leaving."""
    who = who or me()
    try:
        while True:
            try:
                item = run_as(who, lambda: next(steps))
            except StopIteration:
                return
            yield item
    finally:
        steps.close()  # Stop or a closed tab: the handler's own `finally` runs now


def local_caller():
    """For tests and scripts that call handlers directly: act as the local user."""
    return _caller.set(LOCAL)

