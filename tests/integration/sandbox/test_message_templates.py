"""Message templates in real sandbox workers (`kalcifer_common.templates`): compiled and rendered out of the
calling process, strict about undefined variables, closed to Python internals, bounded in time."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from kalcifer_common.sandbox import ExpressionSandbox, SandboxLimits
from kalcifer_common.templates import RenderedMessage, TemplateRenderError, render_message, syntax_problems


@pytest.fixture
async def sandbox() -> AsyncIterator[ExpressionSandbox]:
    box = ExpressionSandbox(SandboxLimits(workers=1, timeout_seconds=0.3, memory_mb=256))
    yield box
    await box.close()


async def test_a_message_renders_each_part_and_its_subject_on_one_line(sandbox: ExpressionSandbox) -> None:
    parts = {"subject": "Hi\r\n{{ name }}!", "body": "Plain text, no syntax.", "html_body": "<b>{{ n + 1 }}</b>"}
    assert await render_message(sandbox, parts, {"name": "Ada", "n": 41}) == RenderedMessage(
        subject="Hi Ada!", body="Plain text, no syntax.", html_body="<b>42</b>"
    )
    assert await render_message(sandbox, {}, {}) == RenderedMessage("", "", "")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("{{ missing }}", "'missing' is undefined"),
        ("{{ user.name }}", "'dict object' has no attribute 'name'"),
        ("{{ ''.__class__.__subclasses__() }}", "unsafe"),
        ("{{ range(10**9) | list }}", "Range too big"),
        ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "budget of 300 ms"),
    ],
)
async def test_a_part_that_cannot_render_is_named_with_why(sandbox: ExpressionSandbox, body: str, reason: str) -> None:
    with pytest.raises(TemplateRenderError) as caught:
        await render_message(sandbox, {"subject": "fine", "body": body}, {"user": {}})
    assert caught.value.part == "body"
    assert reason in caught.value.reason


async def test_syntax_problems_name_the_part_and_the_line(sandbox: ExpressionSandbox) -> None:
    problems = await syntax_problems(
        sandbox, {"subject": "ok {{ x }}", "body": "line 1\nline 2 {% if %}", "html_body": "{{ unclosed"}
    )
    assert set(problems) == {"body", "html_body"}
    assert problems["body"].startswith("line 2: ")
    assert problems["html_body"].startswith("line 1: ")
    assert await syntax_problems(sandbox, {"subject": "", "body": "plain"}) == {}
