"""The exploration pages: Jinja2 templates (autoescape on) over the views, for the Airflow plugin and for
``trailguard explore``'s static folder.

The pages run no script and load nothing from another host: charts are inline SVG, the one style sheet
ships with the package. :data:`CSP` is sent with every page (as a header by the plugin, as a ``<meta>``
in the static files); the pages the pipeline wrote (a report as emailed, a quality page) get
:data:`DOCUMENT_CSP`, which also forbids scripts and sandboxes them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment
from markupsafe import Markup

from trailguard.explore import svg
from trailguard.explore import views as v
from trailguard.store.fs import DataPath, as_path
from trailguard.store.render import template_environment

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
STYLESHEET = TEMPLATES / "explore.css"

#: The exploration pages: nothing but this origin's style sheet, images inline, forms to this origin.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'self'"
)
#: The same in a static file's ``<meta>`` (a meta policy cannot say frame-ancestors; browsers warn).
META_CSP = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'none'; base-uri 'none'"
#: Pages the pipeline wrote with inline styles (a report as emailed, a quality page): no script at all.
DOCUMENT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; sandbox"

PAGES = ("reports", "activity", "pca", "quality", "models")
TITLES = {"reports": "Reports", "activity": "Activity", "pca": "Behaviour map (PCA)", "quality": "Data quality",
          "models": "Models"}  # fmt: skip


def short_principal(principal: str) -> str:
    """A readable label for a principal ARN: ``user/alice`` -> alice, ``assumed-role/R/s`` -> R/s."""
    text = str(principal)
    resource = text.split(":", 5)[-1] if text.startswith("arn:") else text
    for prefix in ("user/", "assumed-role/", "role/", "federated-user/"):
        if resource.startswith(prefix):
            return resource[len(prefix) :]
    return resource[:60]


def principal_file(principal: str) -> str:
    """A static file name for a principal's page: a hash, never the attacker-controlled name itself."""
    return (
        "principal-" + hashlib.sha256(principal.encode("utf-8", "surrogatepass")).hexdigest()[:16] + ".html"
    )


@dataclass
class Links:
    """Where a page links to: the plugin's routes (``prefix`` + query) or the static folder's files."""

    static: bool = False
    prefix: str = "/trailguard"
    mlflow_ui: str | None = None
    principal_pages: set[str] = field(default_factory=set)

    def page(self, name: str, **query: Any) -> str:
        if self.static:
            if name == "activity" and query.get("principal") in self.principal_pages:
                return principal_file(query["principal"])
            return "index.html" if name == "reports" else f"{name}.html"
        params = {k: v for k, v in query.items() if v not in (None, "")}
        return f"{self.prefix}/{name}" + (f"?{urlencode(params)}" if params else "")

    def report(self, item: dict[str, Any]) -> str:
        kind = "reports" if item["kind"] == "report" else "investigations"
        return f"{kind}/{item['id']}.html" if self.static else f"{self.prefix}/{kind}/{item['id']}"

    def quality_day(self, day: str) -> str:
        return f"quality/{day}.html" if self.static else f"{self.prefix}/quality/{day}"

    def stylesheet(self) -> str:
        return "explore.css" if self.static else f"{self.prefix}/static/explore.css"

    def json(self, name: str, **query: Any) -> str:
        if self.static:
            return f"data/{name}.json"
        params = {k: v for k, v in query.items() if v not in (None, "")}
        return f"{self.prefix}/api/{name}" + (f"?{urlencode(params)}" if params else "")

    def mlflow_run(self, experiment_id: str | None, run_id: str | None) -> str | None:
        if not self.mlflow_ui or not run_id or not experiment_id:
            return None
        return f"{self.mlflow_ui.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    def mlflow_model(self, name: str, version: str | None) -> str | None:
        if not self.mlflow_ui or not version:
            return None
        return f"{self.mlflow_ui.rstrip('/')}/#/models/{name}/versions/{version}"


_FILTERS = {
    "short": short_principal,
    "num": lambda x: "-" if x is None else (f"{x:,}" if isinstance(x, int) else f"{x:,.3f}"),
    "pct": lambda x: f"{100 * x:.1f}%",
}


def environment() -> Environment:
    """The explore wing's templates in the one autoescaping environment of the library (store/render.py)."""
    env = template_environment("trailguard.explore")
    if "short" not in env.filters:
        env.filters.update(_FILTERS)
    return env


def render(
    page: str,
    view: dict[str, Any],
    links: Links,
    *,
    meta_csp: bool = False,
    json_url: str | None = None,
    **extra: Any,
) -> str:
    """One page: ``page`` is one of :data:`PAGES` (or ``error``) over its view."""
    context = {"json_url": json_url or links.json(page), "view": view, "links": links, "page": page, "pages": PAGES, "titles": TITLES,
               "meta_csp": META_CSP if meta_csp else None, "charts": _charts(page, view, links), **extra}  # fmt: skip
    return environment().get_template(f"{page}.html").render(**context)


def _charts(page: str, view: dict[str, Any], links: Links) -> dict[str, Markup]:
    if page == "activity":
        categories = [c for c in view["categories"] if not c["key"].startswith("service:")]
        series = [(c["label"], [d["counts"][c["key"]] for d in view["days"]]) for c in categories]
        return {
            "per_day": svg.stacked_bars([d["date"] for d in view["days"]], series, title="Events per day by category"),
            "apis": svg.hbars([(r["value"], r["events"]) for r in view["top_apis"]], title="Top APIs"),
            "errors": svg.hbars([(r["value"], r["events"]) for r in view["top_errors"]], title="Top errors",
                                bar_color="#d62728"),
            "countries": svg.hbars([(r["country"], r["signins"]) for r in view["console"]["by_country"][:20]],
                                   title="Console sign-ins by country", bar_color="#2ca02c"),
        }  # fmt: skip
    if page == "pca" and view["points"]:
        filters = view["filters"]
        points = [{**p, "label": short_principal(p["principal"]),
                   "href": links.page("activity", principal=p["principal"], account=filters.get("account"),
                                      region=filters.get("region"), **{"from": view["period"]["from"],
                                                                       "to": view["period"]["to"]})}
                  for p in view["points"]]  # fmt: skip
        pc = view["components"]
        return {"map": svg.scatter(points, title="Principals on the first two principal components",
                                   x_label=f"PC1 ({100 * pc[0]['explained_variance']:.1f}% of variance)",
                                   y_label=f"PC2 ({100 * pc[1]['explained_variance']:.1f}% of variance)")}  # fmt: skip
    return {}


# -- the static folder -----------------------------------------------------------------------------------------
def _inert(document: str) -> str:
    """A page the pipeline wrote, made to carry :data:`DOCUMENT_CSP` as a ``<meta>`` (static copies)."""
    meta = f'<meta http-equiv="Content-Security-Policy" content="{DOCUMENT_CSP.replace("; sandbox", "")}">'
    lower = document.lower()
    at = lower.find("<head>")
    if at >= 0:
        return document[: at + 6] + meta + document[at + 6 :]
    return meta + document


def write_static(
    root: DataPath | str,
    out: Path,
    period: v.Period,
    *,
    tracking_uri: str | None = None,
    mlflow_ui: str | None = None,
) -> dict[str, Any]:
    """Write every view as a static folder that works offline; returns what was written."""
    root = as_path(root)
    out.mkdir(parents=True, exist_ok=True)
    (out / "data").mkdir(exist_ok=True)
    rows = v.activity_rows(root, period)
    views: dict[str, dict[str, Any]] = {
        "reports": v.reports_view(root),
        "activity": v.activity_view(root, period, rows=rows),
        "pca": v.pca_view(root, period),
        "quality": v.quality_view(root, period),
    }
    try:
        views["models"] = v.models_view(tracking_uri) if tracking_uri else {"use_cases": [], "metrics": [],
                                                                           "note": "no MLflow store configured"}  # fmt: skip
    except Exception as exc:  # the other pages are still worth having
        log.warning("models: %s", exc)
        views["models"] = {"use_cases": [], "metrics": [], "note": f"MLflow could not be read: {exc}"[:300]}
    outliers = [p["principal"] for p in views["pca"]["points"] if p["outlier"]]
    links = Links(static=True, mlflow_ui=mlflow_ui, principal_pages=set(outliers))
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    written = []
    for page, view in views.items():
        name = links.page(page)
        (out / name).write_text(
            render(page, view, links, meta_csp=True, generated=generated), encoding="utf-8"
        )
        (out / "data" / f"{page}.json").write_text(json.dumps(view, indent=1, default=str), encoding="utf-8")
        written.append(name)
    for principal in outliers:
        view = v.activity_view(root, period, principal=principal, rows=rows)
        (out / principal_file(principal)).write_text(
            render("activity", view, links, meta_csp=True, generated=generated), encoding="utf-8"
        )
        written.append(principal_file(principal))
    shutil.copyfile(STYLESHEET, out / "explore.css")
    for item in views["reports"]["reports"]:
        source = (
            (root / "reports" / item["id"] / "report.html")
            if item["kind"] == "report"
            else (root / "investigations" / item["id"] / "investigation.html")
        )
        if source.exists():
            target = out / links.report(item)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(_inert(source.read_text(encoding="utf-8", errors="replace")), encoding="utf-8")
    for day in views["quality"]["days"]:
        page = root / "quality" / f"date={day['date']}" / "index.html"
        if day.get("has_html") and page.exists():
            target = out / links.quality_day(day["date"])
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(_inert(page.read_text(encoding="utf-8", errors="replace")), encoding="utf-8")
    return {"folder": str(out), "pages": written, "period": period.to_json(),
            "missing_days": views["activity"]["missing_days"]}  # fmt: skip
