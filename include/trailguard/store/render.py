"""Pages from Jinja2 templates: the one rendering environment every wing's HTML goes through.

Every value a template shows may come from a CloudTrail record (attacker-controlled), so the environment
autoescapes everything and a misspelt variable is an error rather than an empty string. Each wing keeps its
templates in its own ``templates/`` folder (``report/templates/``, ``quality/templates/``) and asks for
its environment by package name; this module lives in the lowest wing so that every wing can use it.
"""

from __future__ import annotations

import functools
import html
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, pass_eval_context
from jinja2.nodes import EvalContext
from markupsafe import Markup


@functools.cache
def template_environment(package: str) -> Environment:
    """The environment of ``package``'s ``templates/`` folder (built once per package and process)."""
    return Environment(
        loader=PackageLoader(package, "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        finalize=_escaped,
    )


@pass_eval_context
def _escaped(context: EvalContext, value: Any) -> Any:
    """A value escaped as the standard library does (``&quot;``, ``&#x27;``), before autoescaping sees it;
    markup a template built itself passes unchanged, and so does everything in a plain-text template
    (``{% autoescape false %}``). Autoescaping alone would write ``&#34;``: the same text, spelt
    differently from the pages TrailGuard wrote before it used templates."""
    if not context.autoescape or hasattr(value, "__html__"):
        return value
    return Markup(html.escape(str(value), quote=True))


def render(package: str, template: str, **context: Any) -> str:
    """``template`` of ``package`` rendered with ``context`` (every value escaped)."""
    return template_environment(package).get_template(template).render(**context)
