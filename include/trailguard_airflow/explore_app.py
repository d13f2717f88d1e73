"""The TrailGuard pages inside Airflow's api-server: a FastAPI app the plugin mounts at ``/trailguard``.

Every route, page or JSON, depends on Airflow's own authentication (``get_user`` of
``airflow.api_fastapi.core_api.security``: the session cookie of the UI or a bearer token) and asks the
auth manager for the ``WEBSITE`` view, as Airflow's own UI pages do. Without a login a page redirects to
Airflow's login and comes back; JSON gets 401. The views read only the activity tables, reports, quality
results and MLflow (:mod:`trailguard.explore`), never raw events. Every response carries a strict
Content-Security-Policy: no script may run, nothing loads from another host.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

URL_PREFIX = "/trailguard"
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _settings() -> Any:
    from trailguard.store.settings import load_settings

    return load_settings()


def _links(request: Request) -> Any:
    from trailguard.explore.render import Links

    prefix = (request.scope.get("root_path") or URL_PREFIX).rstrip("/")
    return Links(static=False, prefix=prefix, mlflow_ui=_settings().mlflow_ui_url)


def _tracking_uri() -> str | None:
    from trailguard.model.training import tracking_uri_for

    settings = _settings()
    return tracking_uri_for(settings.data_path, settings.mlflow_tracking_uri)


def _view(name: str, query: dict[str, str | None]) -> dict[str, Any]:
    """The named view for the query (``from``, ``to``, ``account``, ``region``, ``principal``)."""
    from trailguard.explore import views

    root = _settings().data_path
    if name == "reports":
        return views.reports_view(root)
    if name == "models":
        return views.models_view(_tracking_uri() or "")
    period = views.resolve_period(root, query.get("from"), query.get("to"))
    if name == "activity":
        return views.activity_view(root, period, account=query.get("account"), region=query.get("region"),
                                   principal=query.get("principal"))  # fmt: skip
    if name == "pca":
        return views.pca_view(root, period, account=query.get("account"), region=query.get("region"))
    return views.quality_view(root, period)


def _query(request: Request) -> dict[str, str | None]:
    keys = ("from", "to", "account", "region", "principal")
    return {k: (request.query_params.get(k) or None) for k in keys}


def _document(path: Any) -> Response:
    """A page the pipeline wrote (a report as emailed, a quality page), sandboxed: no script runs."""
    from trailguard.explore.render import DOCUMENT_CSP

    if not path.exists():
        raise HTTPException(status_code=404, detail="not found")
    response = HTMLResponse(path.read_text(encoding="utf-8", errors="replace"))
    response.headers["Content-Security-Policy"] = DOCUMENT_CSP + "; frame-ancestors 'self'"
    return response


def create_app() -> FastAPI:
    """The sub-application; Airflow mounts it under ``URL_PREFIX`` (its root_path)."""
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import requires_access_view

    app = FastAPI(
        title="TrailGuard",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(requires_access_view(AccessView.WEBSITE))],
    )

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        from trailguard.explore.render import CSP

        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.exception_handler(StarletteHTTPException)
    async def not_logged_in(request: Request, exc: StarletteHTTPException) -> Response:
        """Pages send a browser to Airflow's login (and back); JSON and other errors stay JSON."""
        is_api = request.url.path.startswith(f"{request.scope.get('root_path', '')}/api/")
        if exc.status_code == 401 and not is_api and request.method == "GET":
            from airflow.api_fastapi.app import get_auth_manager

            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            login = get_auth_manager().get_url_login(next_url=target)
            return RedirectResponse(
                login if "next=" in login else f"{login}?next={quote(target)}", status_code=302
            )
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    @app.get("/", include_in_schema=False)
    def index(request: Request) -> Response:
        return RedirectResponse(f"{_links(request).prefix}/reports", status_code=302)

    @app.get("/static/explore.css", include_in_schema=False)
    def stylesheet() -> Response:
        from trailguard.explore.render import STYLESHEET

        return FileResponse(STYLESHEET, media_type="text/css")

    def page(name: str) -> Any:
        def handler(request: Request) -> Response:
            from trailguard.explore import render, views

            links = _links(request)
            query = _query(request)
            try:
                view = _view(name, query)
            except views.ViewError as exc:
                html = render.render("error", {}, links, message=str(exc), title=render.TITLES[name])
                return HTMLResponse(html, status_code=400)
            return HTMLResponse(render.render(name, view, links, json_url=links.json(name, **query)))

        handler.__name__ = f"page_{name}"
        return handler

    def api(name: str) -> Any:
        def handler(request: Request) -> Response:
            from trailguard.explore import views

            try:
                return JSONResponse(_view(name, _query(request)))
            except views.ViewError as exc:
                return JSONResponse({"detail": str(exc)}, status_code=400)

        handler.__name__ = f"api_{name}"
        return handler

    for name in ("reports", "activity", "pca", "quality", "models"):
        app.add_api_route(f"/{name}", page(name), methods=["GET"], response_class=HTMLResponse)
        app.add_api_route(f"/api/{name}", api(name), methods=["GET"])

    @app.get("/reports/{day}", include_in_schema=False)
    def report_page(day: str) -> Response:
        if not _DAY.match(day):
            raise HTTPException(status_code=404, detail="not found")
        return _document(_settings().data_path / "reports" / day / "report.html")

    @app.get("/investigations/{name}", include_in_schema=False)
    def investigation_page(name: str) -> Response:
        if not _NAME.match(name) or ".." in name:
            raise HTTPException(status_code=404, detail="not found")
        return _document(_settings().data_path / "investigations" / name / "investigation.html")

    @app.get("/quality/{day}", include_in_schema=False)
    def quality_page(day: str) -> Response:
        if not _DAY.match(day):
            raise HTTPException(status_code=404, detail="not found")
        return _document(_settings().data_path / "quality" / f"date={day}" / "index.html")

    return app
