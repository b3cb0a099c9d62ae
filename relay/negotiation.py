"""Which exposition format to ask the upstream for and to serve, from Accept and Content-Type headers (pure).

The relay never converts between formats: it asks the upstream for OpenMetrics only when the scraper prefers
it, and serves whatever the upstream answered (relabeled). Text needs no conversion to be stored the same way;
OpenMetrics made from text would have to invent `_total` names and units.
"""

from __future__ import annotations

from dataclasses import dataclass

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TEXT_UTF8_CONTENT_TYPE = "text/plain; version=1.0.0; charset=utf-8; escaping=allow-utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
TEXT_ONLY_ACCEPT = "text/plain;version=0.0.4"
OPENMETRICS_FIRST_ACCEPT = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
_OPENMETRICS_VERSIONS = (None, "1.0.0", "0.0.1")
_TEXT_VERSIONS = (None, "0.0.4", "1.0.0")


@dataclass(frozen=True, slots=True)
class MediaRange:
    """One entry of an Accept header (or a Content-Type): type, parameters, quality."""

    media_type: str
    params: dict[str, str]
    quality: float


@dataclass(frozen=True, slots=True)
class Preferences:
    """What a scraper can take: OpenMetrics preferred over text, and quoted UTF-8 names in text."""

    openmetrics: bool
    utf8_names: bool


def parse_media_ranges(header: str) -> list[MediaRange]:
    """The entries of an Accept header, lower-cased, with their q values (1 when absent)."""
    ranges = []
    for entry in header.split(","):
        media_type, *raw_params = (part.strip() for part in entry.split(";"))
        if not media_type:
            continue
        params = {}
        for raw in raw_params:
            key, _, value = raw.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        try:
            quality = float(params.pop("q", "1"))
        except ValueError:
            quality = 0.0
        ranges.append(MediaRange(media_type.lower(), params, quality))
    return ranges


def scraper_preferences(accept: str) -> Preferences:
    """What the scraper's Accept header asks for; no header (curl, a browser) means text."""
    best_openmetrics = best_text = 0.0
    utf8_names = False
    for media in parse_media_ranges(accept):
        version = media.params.get("version")
        if media.media_type == "application/openmetrics-text" and version in _OPENMETRICS_VERSIONS:
            best_openmetrics = max(best_openmetrics, media.quality)
        elif media.media_type == "text/plain" and version in _TEXT_VERSIONS and media.quality > 0:
            best_text = max(best_text, media.quality)
            utf8_names |= media.params.get("escaping") == "allow-utf-8"
    return Preferences(
        openmetrics=best_openmetrics > 0 and best_openmetrics >= best_text, utf8_names=utf8_names
    )


def upstream_accept(openmetrics: bool) -> str:
    """The Accept header for the upstream: OpenMetrics first only when the scraper prefers it."""
    return OPENMETRICS_FIRST_ACCEPT if openmetrics else TEXT_ONLY_ACCEPT


def answer_is_openmetrics(content_type: str, openmetrics_asked: bool) -> bool | None:
    """True for an OpenMetrics answer (when asked for), False for text 0.0.4, None for anything else."""
    ranges = parse_media_ranges(content_type)
    if len(ranges) != 1:
        return None
    media = ranges[0]
    version = media.params.get("version")
    if media.media_type == "text/plain" and version in (None, "0.0.4"):
        return False
    if (
        openmetrics_asked
        and media.media_type == "application/openmetrics-text"
        and version in _OPENMETRICS_VERSIONS
    ):
        return True
    return None


def response_content_type(openmetrics: bool, utf8_names: bool) -> str:
    """The exact Content-Type of a relayed body."""
    if openmetrics:
        return OPENMETRICS_CONTENT_TYPE
    return TEXT_UTF8_CONTENT_TYPE if utf8_names else TEXT_CONTENT_TYPE
