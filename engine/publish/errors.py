"""What can stop a build: every message says what is wrong and what to do."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.publish import BuildReport


class PublishError(Exception):
    """The site cannot be published as planned (unsafe path, foreign output folder, …)."""


class UnsafePathError(PublishError):
    """A path would escape the output folder or cannot be served as a plain file."""


class PageRenderError(PublishError):
    """A page failed to render; nothing was published."""


class PublishCommandError(PublishError):
    """``PUBLISH_COMMAND`` failed; the site is built and live, but was not deployed."""

    def __init__(self, message: str, report: BuildReport) -> None:
        super().__init__(message)
        self.report = report
