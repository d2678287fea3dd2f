"""Render the protocol's Markdown reports through Jinja2 templates, and read our own reports back.

Templates hold all presentation; this module only builds their context, formats numbers
through filters, and embeds a data block so a report can be verified and reused later.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from .. import __version__

DATA_MARKER = "exprun-data"
_DATA_BLOCK = re.compile(r"\n?<!-- " + DATA_MARKER + r": (\{.*\}) -->\s*\Z", re.DOTALL)


class ReportError(ValueError):
    """A report that exists but cannot be used; the message names the file and what is wrong."""


def _number(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return _unsigned_zero(f"{value:.{digits}f}")


def _signed(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return _unsigned_zero(f"{value:+.{digits}f}")


def _unsigned_zero(text: str) -> str:
    """A value that rounds to zero carries no sign: never −0.0000 (or +0.0000) for a tiny Δ."""
    return text.lstrip("+-") if not text.strip("+-0.") else text


def _metric_digits(context: Any, digits: int) -> int:
    """Decimals for a value of the metric: ``digits``, or the report's ``digits`` where its σ needs more."""
    wanted = context.get("digits", 4) if hasattr(context, "get") else 4
    return max(digits, int(wanted)) if isinstance(wanted, int) else digits


@jinja2.pass_context
def _metric(context: Any, value: Any) -> str:
    """A value of the metric (mean, σ, Δ, an interval's end): 4 decimals, or significant digits when σ is tiny."""
    return _number(value, _metric_digits(context, 4))


@jinja2.pass_context
def _signed_metric(context: Any, value: Any, digits: int = 2) -> str:
    """Signed; a metric value (``digits`` of 4 or more) gets the report's significant digits too."""
    return _signed(value, _metric_digits(context, digits) if digits >= 4 else digits)


def _pvalue(value: Any) -> str:
    """Four decimals, or scientific notation once four decimals would read 0.0000."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.4f}" if value >= 1e-4 else f"{value:.1e}"


def _percent(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value * 100:.{digits}f}%"


def _thousands(value: Any) -> str:
    return "n/a" if value is None else f"{value:,}"


def _md(value: Any) -> str:
    """Make user-supplied text safe inside a Markdown table cell or heading."""
    text = str(value).replace("\r", " ").replace("\n", " ")
    return text.replace("|", "\\|").replace("`", "'").replace("<", "&lt;")


def _code(value: Any) -> str:
    """A Markdown code span shown exactly as written: a fence longer than any run of backticks
    inside, and no HTML escapes (``<`` reads as ``<``)."""
    if isinstance(value, (list, tuple)):
        value = shlex.join(str(v) for v in value)
    text = str(value).replace("\r", " ").replace("\n", " ")
    fence = "`" * (1 + max((len(run) for run in re.findall("`+", text)), default=0))
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


@functools.lru_cache(maxsize=None)
def environment(template_dir: Path | None = None) -> jinja2.Environment:
    """Templates from the user's folder first, then the ones shipped with the package.

    One environment per folder, so each template is compiled once per session (jinja2 still
    reloads a template file that changes).
    """
    loaders: list[jinja2.BaseLoader] = []
    if template_dir is not None:
        loaders.append(jinja2.FileSystemLoader(str(template_dir)))
    loaders.append(jinja2.PackageLoader("pytest_exprun.reports", "templates"))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["f4"] = _metric
    env.filters["f2"] = lambda v: _number(v, 2)
    env.filters["f6"] = lambda v: _number(v, 6)
    env.filters["signed"] = _signed_metric
    env.filters["p"] = _pvalue
    env.filters["pct"] = _percent
    env.filters["thousands"] = _thousands
    env.filters["md"] = _md
    env.filters["code"] = _code
    env.globals["exprun_version"] = __version__
    return env


def render(template: str, context: dict[str, Any], template_dir: Path | None = None) -> str:
    try:
        return environment(template_dir).get_template(template).render(**context)
    except jinja2.TemplateError as exc:
        where = f" (templates in {template_dir})" if template_dir else ""
        raise ReportError(f"cannot render {template}{where}: {exc}") from None


def body_digest(body: str) -> str:
    return hashlib.sha256(body.rstrip().encode("utf-8")).hexdigest()


def tables_digest(body: str) -> str:
    """Digest of the table rows alone: prose may be added to a report, its numbers not changed."""
    rows = [line.strip() for line in body.splitlines() if line.lstrip().startswith("|")]
    return hashlib.sha256("\n".join(rows).encode("utf-8")).hexdigest()


def with_data(body: str, data: dict[str, Any]) -> str:
    """Append the machine-readable block that lets us verify and reuse the report later."""
    payload = dict(data, body_sha256=body_digest(body), tables_sha256=tables_digest(body), exprun_version=__version__)
    # '>' only ever occurs inside JSON strings, where \u003e is equivalent; this keeps '-->' out.
    blob = json.dumps(payload, sort_keys=True, allow_nan=False).replace(">", "\\u003e")
    return f"{body.rstrip()}\n\n<!-- {DATA_MARKER}: {blob} -->\n"


@dataclass(frozen=True)
class ReadReport:
    body: str
    data: dict[str, Any] | None
    edited: bool  # the visible text differs from what exprun wrote


def read_report(path: Path) -> ReadReport:
    """Split a report into its text and our data block (None when a person wrote the file)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ReportError(f"{path} is not UTF-8 text") from None
    match = _DATA_BLOCK.search(text)
    if match is None:
        return ReadReport(body=text, data=None, edited=True)
    body = text[: match.start()]
    try:
        data = json.loads(match.group(1))
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: its exprun data block is damaged ({exc.msg})") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: its exprun data block is damaged (not an object)")
    return ReadReport(body=body, data=data, edited=data.get("body_sha256") != body_digest(body))


def unchanged_since_written(path: Path, digests: tuple[tuple[str, int], ...] | None) -> bool:
    """True when ``path`` is still a report exprun wrote: the size and SHA-256 of one recorded in the
    store when it was written (``RunStore.report_digest``). Without a recorded digest (a store from
    an earlier version) the report's own data block decides, as it did then (``is_ours_unedited``)."""
    if digests is None:
        return is_ours_unedited(path)
    try:
        if path.is_symlink():
            return False
        size = path.stat().st_size
        if all(size != expected for _, expected in digests):
            return False
        found = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return False
    return any(found == sha256 and size == expected for sha256, expected in digests)


def is_ours_unedited(path: Path) -> bool:
    """True when ``path`` is a report exprun wrote and nobody changed since; safe to replace."""
    try:
        read = read_report(path)
    except (OSError, ReportError):
        return False
    return read.data is not None and not read.edited
