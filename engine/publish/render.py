"""Rendering stale pages, in forked worker processes when there are many.

Workers inherit the plan through ``fork`` (nothing is pickled but page indices and
digests), render, hash, and write the pages whose bytes changed straight into the
staged generation; the parent only collects ``(index, sha256, written, key)``.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.publish.errors import PageRenderError
from engine.publish.generations import write_file

#: Below this many stale pages, forking workers costs more than it saves.
PARALLEL_MIN_PAGES = 400

#: A render worker is replaced by a fresh fork after about this many pages. Every object a
#: worker reads gets its reference count written, which copies the memory page it is on
#: (copy-on-write): a worker that rendered half of a 100,000-product site would hold its
#: own copy of most of the plan. A fresh worker shares the parent's memory again, so each
#: copies only what a few thousand pages (rendered in ``render_rank`` order) show.
PAGES_PER_WORKER = 2048

#: (page index, sha256 of its bytes, written, the page's key)
Result = tuple[int, str, bool, str]


@dataclass
class RenderJob:
    """Everything a render worker needs; inherited by forked workers, never pickled."""

    pages: Sequence[Any]
    files: list[str]
    live_sha: list[str | None]
    live_root: str | None
    staged_root: str
    render: Callable[[Any], bytes]


_JOB: RenderJob | None = None


def describe_render_error(url_path: str, exc: BaseException) -> str:
    """Return ``"page <path> failed to render: <template>:<line>: <error>"``."""
    where = ""
    filename = getattr(exc, "filename", None)
    lineno = getattr(exc, "lineno", None)
    if isinstance(filename, str) and lineno:
        where = f"{filename}:{lineno}: "
    else:
        import traceback

        for frame in reversed(traceback.extract_tb(exc.__traceback__)):
            if frame.filename.endswith((".j2", ".html", ".jinja", ".xml", ".txt")):
                where = f"{frame.filename}:{frame.lineno}: "
                break
    return f"page {url_path} failed to render: {where}{type(exc).__name__}: {exc}"


def render_indices(job: RenderJob, indices: Sequence[int]) -> tuple[list[Result], str | None]:
    """Render pages; write those whose bytes differ from the live ones into the staged folder."""
    results: list[Result] = []
    for index in indices:
        page = job.pages[index]
        try:
            # The whole context, made once for both the bytes and the key, then dropped.
            page = page.materialized() if getattr(page, "fill", None) else page
            data = job.render(page)
            if not isinstance(data, bytes):
                raise TypeError(f"render returned {type(data).__name__}, not bytes")
        except Exception as exc:
            return results, describe_render_error(page.path, exc)
        sha = hashlib.sha256(data).hexdigest()
        relative = job.files[index]
        write = (
            job.live_sha[index] != sha
            or job.live_root is None
            or not os.path.isfile(os.path.join(job.live_root, relative))
        )
        if write:
            write_file(job.staged_root, relative, data, fresh=job.live_root is None)
        # A page's key may be computed on first use: here, in the worker, not in the parent.
        results.append((index, sha, write, page.key))
    return results, None


def _worker_start() -> None:
    """Make a forked worker refuse database work: the parent's session is not its to use."""
    if "sqlalchemy.orm" not in sys.modules:
        return  # no session in this process (a build reading SQLite directly)
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    def refuse(state: Any) -> None:
        raise RuntimeError(
            "a page queried the database while rendering; plan_site must load everything "
            "a template shows (pages render in worker processes)"
        )

    event.listen(Session, "do_orm_execute", refuse)


def _worker_chunk(indices: list[int]) -> tuple[list[Result], str | None]:
    """Render one chunk in a forked worker."""
    assert _JOB is not None
    try:
        return render_indices(_JOB, indices)
    except Exception as exc:  # an I/O error: report it as text, exceptions may not pickle
        return [], f"writing pages failed: {type(exc).__name__}: {exc}"


def worker_count(settings: Any) -> int:
    """Return how many render processes to use (BUILD_WORKERS; 0 = one per CPU)."""
    wanted = int(settings.get("BUILD_WORKERS") or 0)
    if wanted > 0:
        return wanted
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def render_all(
    job: RenderJob,
    stale: list[int],
    workers: int,
    parallel_min_pages: int,
    progress: Callable[[int, int], None] | None,
) -> list[Result]:
    """Render the stale pages, in forked workers when there are many."""
    global _JOB
    total = len(stale)
    results: list[Result] = []
    if progress:
        progress(0, total)
    serial = workers <= 1 or total < parallel_min_pages
    if not serial:
        import multiprocessing  # only for a build of many pages

        serial = "fork" not in multiprocessing.get_all_start_methods()
    if serial:
        step = 500
        for start in range(0, total, step):
            done, error = render_indices(job, stale[start : start + step])
            results += done
            if error:
                raise PageRenderError(error)
            if progress:
                progress(len(results), total)
        return results
    size = max(16, min(256, total // (workers * 8)))
    chunks = [stale[start : start + size] for start in range(0, total, size)]
    prepare = getattr(job.render, "prepare", None)
    if prepare is not None:
        prepare()  # what every worker would otherwise do for itself
    _JOB = job
    try:
        context = multiprocessing.get_context("fork")
        with context.Pool(
            workers, initializer=_worker_start, maxtasksperchild=max(1, PAGES_PER_WORKER // size)
        ) as pool:
            for done, error in pool.imap_unordered(_worker_chunk, chunks):
                results += done
                if error:
                    raise PageRenderError(error)
                if progress:
                    progress(len(results), total)
    finally:
        _JOB = None
    return results
