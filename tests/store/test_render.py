"""The one rendering environment: autoescaped, strict, and each wing's templates shipped with it."""

from __future__ import annotations

import pytest
from jinja2 import UndefinedError
from trailguard.quality.page import render_html
from trailguard.store.render import template_environment


def test_values_are_escaped_and_missing_names_are_errors() -> None:
    env = template_environment("trailguard.report")
    assert env is template_environment("trailguard.report")
    template = env.from_string('<p title="{{ x }}">{{ x }}</p>')
    assert template.render(x="\"'><script>") == (
        '<p title="&quot;&#x27;&gt;&lt;script&gt;">&quot;&#x27;&gt;&lt;script&gt;</p>'
    )
    with pytest.raises(UndefinedError):
        template.render()
    plain = env.from_string("{% autoescape false %}{{ x }}{% endautoescape %}")
    assert plain.render(x="a & 'b' <c>") == "a & 'b' <c>"  # plain-text templates (email.txt) stay as written


def test_each_wing_finds_its_templates() -> None:
    assert {"daily_report.html", "email.html", "email.txt"} <= set(
        template_environment("trailguard.report").list_templates()
    )
    assert "quality.html" in template_environment("trailguard.quality").list_templates()


def test_quality_page_keeps_its_strict_csp() -> None:
    page = render_html({"date": "2026-11-20", "status": "passed", "outcomes": []})
    assert (
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        in page
    )
