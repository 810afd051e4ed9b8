"""``orchestrate serve``: an HTTP API and a page over the run store (the ``serve`` extra: FastAPI, uvicorn and
sse-starlette; nothing else imports this package).

``app`` puts it together (:func:`create_app`); ``api`` has the routes, ``auth`` the token, ``limits`` the body
limit, ``runs`` the runs this server runs, ``views`` the JSON shapes read from the store, ``sse`` the event
streams, ``projects`` the task files under ``--projects``; the page is ``static/``. The API is described in
``docs/serve-api.md``.
"""

from orchestration.serve.app import create_app

__all__ = ["create_app"]
