"""The output folder: a symlink to the live generation, switched by one atomic rename.

Generations share unchanged files as hard links, so a file that is in a generation is
never written to again: new bytes always go to a new file renamed into place.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gc
import json
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from engine.publish.errors import PublishError
from engine.publish.paths import file_for_path, safe_join

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
_GENERATION_NAME = re.compile(r"^\d+$")
#: A finished copy of a generation, not numbered: the next build that needs a folder
#: tree and has no generation due for deletion recycles it (see ``Staging``).
SPARE_NAME = ".spare"
_PRESTAGE_NAME = re.compile(r"^\.prestage-(\d+)$")


class OutputFolder:
    """The published symlink, its generations folder and the live generation."""

    def __init__(self, out: Path) -> None:
        self.out = Path(os.path.abspath(out))
        if self.out.name in ("", ".", ".."):
            raise PublishError(f"{out}: choose a named folder for the site")
        self.generations = self.out.parent / f".{self.out.name}.generations"

    def live(self) -> Path | None:
        """Return the live generation folder, or None before the first build.

        Refuses an output path that exists and was not made by ``engine build``.
        """
        out = self.out
        if out.is_symlink():
            link = os.readlink(out)
            target = Path(os.path.normpath(os.path.join(out.parent, link)))
            if target.parent.parent != self.generations or target.name != "site":
                raise PublishError(
                    f"{out} is a symlink to {link}, not to a site built by engine build; "
                    "remove it or choose another --out"
                )
            return target.parent if target.is_dir() else None
        if out.is_dir():
            if any(out.iterdir()):
                raise PublishError(
                    f"{out} is a folder of files not written by engine build; refusing to "
                    "replace it. Move it away or choose another --out / OUTPUT_DIR"
                )
            return None
        if out.exists():
            raise PublishError(f"{out} exists and is not a folder; choose another --out")
        return None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the build lock so two builds of one site never interleave."""
        self.generations.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.generations / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def numbers(self) -> list[int]:
        """Return the numbers of the finished generations, oldest first."""
        if not self.generations.is_dir():
            return []
        return sorted(
            int(entry.name)
            for entry in os.scandir(self.generations)
            if _GENERATION_NAME.match(entry.name) and entry.is_dir(follow_symlinks=False)
        )

    def remove_partial(self) -> None:
        """Delete generations a killed build left half-written (never live).

        A ``.prestage-<pid>`` folder belongs to a build that is still planning while its
        process lives (``Prestage``); it is deleted once that process is gone.
        """
        for entry in os.scandir(self.generations):
            if entry.name.startswith(".building-"):
                shutil.rmtree(entry.path, ignore_errors=True)
            match = _PRESTAGE_NAME.match(entry.name)
            if match and not _process_alive(int(match.group(1))):
                shutil.rmtree(entry.path, ignore_errors=True)

    def spare(self) -> Path:
        """Return where the spare generation is kept (it may not exist)."""
        return self.generations / SPARE_NAME

    def needs_new_tree(self, live: Path, keep: int) -> bool:
        """Return True when a build that changes the site would stage a folder tree anew:
        no generation is due for deletion (to recycle) and there is no spare."""
        if self.spare().is_dir():
            return False
        return _doomed(self.numbers(), int(live.name), keep) == []

    def switch(self, generation: Path) -> None:
        """Point the output symlink at a generation with one atomic rename."""
        target = os.path.relpath(generation / "site", self.out.parent)
        temp = self.out.parent / f".{self.out.name}.switch-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        os.symlink(target, temp)
        if self.out.is_dir() and not self.out.is_symlink():
            self.out.rmdir()  # empty (checked by live()); os.replace cannot replace a folder
        os.replace(temp, self.out)


#: The manifests read last, by path, with their file's identity: one build reads the live
#: one several times (unchanged check, planning, publishing), around the one it recycles.
#: A manifest is only ever replaced by a rename, so a new one is a new inode.
_LAST_READ: dict[str, tuple[tuple[int, int, int], dict[str, Any]]] = {}
_LAST_READ_KEPT = 3


def read_manifest(generation: Path | None) -> dict[str, Any]:
    """Return a generation's manifest; an unreadable one means "render everything".

    The result may be shared with earlier readers of the same file: change a copy.
    """
    empty: dict[str, Any] = {"version": MANIFEST_VERSION, "files": {}}
    if generation is None:
        return empty
    path = str(generation / MANIFEST_NAME)
    try:
        with open(path, "rb") as handle:
            stat = os.fstat(handle.fileno())
            identity = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            known = _LAST_READ.get(path)
            if known is not None and known[0] == identity:
                return known[1]
            data = json.loads(handle.read())
    except (OSError, ValueError):
        return empty
    if not isinstance(data, dict) or data.get("version") != MANIFEST_VERSION:
        return empty
    if len(_LAST_READ) >= _LAST_READ_KEPT:
        _LAST_READ.clear()
    _LAST_READ[path] = (identity, data)
    return data


def write_manifest(generation: Path, manifest: Mapping[str, Any]) -> None:
    """Replace a generation's manifest atomically (it sits beside the site, not in it)."""
    _LAST_READ.clear()
    data = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    temp = generation / f".{MANIFEST_NAME}.{os.getpid()}"
    temp.write_bytes(data)
    os.replace(temp, generation / MANIFEST_NAME)


def write_file(root: str, relative: str, data: bytes, *, fresh: bool = False) -> None:
    """Write a file into a generation that is not live, as a new inode.

    An existing file may be a hard link shared with the live site, so it is replaced by
    rename, never opened for writing. ``fresh`` says the folder tree is being made from
    nothing (a first build), where a page's own folder is almost never there yet.
    """
    path = safe_join(root, relative)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    if fresh:
        # There already, or its parent is not: the general path below sorts either out.
        with contextlib.suppress(OSError):
            os.mkdir(os.path.dirname(path))
    try:
        fd = os.open(path, flags, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, flags, 0o644)
    except FileExistsError:
        temp = f"{path}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        _write_all(os.open(temp, flags, 0o644), data)
        os.replace(temp, path)
        return
    _write_all(fd, data)


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte to a new file descriptor and close it (no buffered file object)."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def link_into(source: str, root: str, relative: str, folders: set[str]) -> None:
    """Hard-link ``source`` to ``relative`` under ``root``; ``folders`` holds the folders
    known to exist there, so a new tree costs one ``mkdir`` per folder, not a failed link
    first."""
    destination = safe_join(root, relative)
    folder = os.path.dirname(destination)
    if folder not in folders:
        os.makedirs(folder, exist_ok=True)
        folders.add(folder)
    link_file(source, destination)


def link_file(source: str, destination: str) -> None:
    """Hard-link an unchanged file into a generation (a copy where links are refused)."""
    try:
        _link_or_copy(source, destination)
        return
    except FileNotFoundError:
        os.makedirs(os.path.dirname(destination), exist_ok=True)
    except FileExistsError:
        temp = f"{destination}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        _link_or_copy(source, temp)
        os.replace(temp, destination)
        return
    _link_or_copy(source, destination)


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EMLINK, errno.EXDEV, errno.ENOTSUP):
            raise
        shutil.copyfile(source, destination)


def remove_file(root: str, relative: str) -> None:
    """Delete a file from a generation, and the folders it leaves empty."""
    path = safe_join(root, relative)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    folder = os.path.dirname(path)
    while folder != root and folder.startswith(root + os.sep):
        try:
            os.rmdir(folder)
        except OSError:
            break
        folder = os.path.dirname(folder)


def _process_alive(pid: int) -> bool:
    """Return True while a process with this id exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _doomed(numbers: list[int], live_number: int | None, keep: int) -> list[int]:
    """Return the generations beyond BUILD_GENERATIONS_KEPT (never the live one)."""
    kept = set(numbers[-keep:]) if keep > 0 else set()
    return [n for n in numbers if n not in kept and n != live_number]


class Prestage:
    """A copy of the live generation, hard-linked by a child process while the build plans.

    Staging a generation where none can be recycled (the first builds after one from
    scratch) costs a ``mkdir`` per page folder and a ``link`` per file: slow system calls
    that need nothing from the plan. A build that is going to plan forks this copy as
    soon as it knows its inputs changed, and ``Staging`` adopts the finished copy (as
    the spare) instead of making the tree itself. The copy only reads the live
    generation and writes its own ``.prestage-<pid>`` folder; everything else happens
    under the build lock.
    """

    def __init__(self, folder: OutputFolder, pid: int, path: Path) -> None:
        self.folder = folder
        self.pid = pid
        self.path = path
        self.status: int | None = None

    @classmethod
    def start(cls, folder: OutputFolder, live: Path | None, keep: int) -> Prestage | None:
        """Fork the copy when a build would otherwise stage a new tree; else None.

        Not in a process with other threads (a web server): forking one is unsafe.
        """
        import threading

        if not hasattr(os, "fork") or threading.active_count() > 1:
            return None
        if live is None or not folder.needs_new_tree(live, keep):
            return None
        manifest = read_manifest(live)
        if not manifest["files"]:
            return None
        path = folder.generations / f".prestage-{os.getpid()}"
        shutil.rmtree(path, ignore_errors=True)  # a pid reused after a killed build
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child process (measured by its exit status)
            # No collections: one would touch every object the build holds, and so copy
            # every memory page it shares with the parent.
            gc.disable()
            code = 1
            try:
                copy_generation(live, path, manifest)
                code = 0
            finally:
                os._exit(code)
        return cls(folder, pid, path)

    def wait(self) -> bool:
        """Wait for the copy; return True when it is complete."""
        if self.status is None:
            _pid, status = os.waitpid(self.pid, 0)
            self.status = os.waitstatus_to_exitcode(status)
        return self.status == 0

    def adopt(self) -> bool:
        """Make the finished copy the spare (under the build lock); delete a failed one.

        Returns True when a spare now exists.
        """
        done = self.wait()
        if not self.path.exists():
            return self.folder.spare().is_dir()
        if done and not self.folder.spare().exists():
            os.rename(self.path, self.folder.spare())
            return True
        shutil.rmtree(self.path, ignore_errors=True)
        return self.folder.spare().is_dir()

    def close(self) -> None:
        """After a build that did not adopt it: keep a complete copy as the spare.

        An interrupted copy is left for the next build's ``remove_partial``.
        """
        try:
            done = self.wait()
        except ChildProcessError:
            return
        if done and self.path.exists():
            with self.folder.locked():
                self.adopt()


def copy_generation(live: Path, destination: Path, manifest: Mapping[str, Any]) -> None:
    """Hard-link every file of a generation into a new folder, with its manifest."""
    source_root = os.path.join(live, "site")
    root = os.path.join(destination, "site")
    os.makedirs(root)
    folders = {root}
    for url_path in sorted(manifest["files"]):
        relative = file_for_path(url_path)
        link_into(os.path.join(source_root, relative), root, relative, folders)
    write_manifest(destination, manifest)


class Staging:
    """The generation a build writes, recycled from one due for deletion when there is one.

    Deleting a generation of 10,000 files and hard-linking a new one each cost seconds
    on a busy disk; bringing the generation that would be pruned up to date costs only
    the files that differ from it, read from its manifest.
    """

    def __init__(
        self,
        folder: OutputFolder,
        live: Path | None,
        keep: int,
        prestage: Prestage | None = None,
    ) -> None:
        self.folder = folder
        #: Folders to delete after the switch besides ``delete_after`` (unreadable ones).
        self.doomed_folders: list[Path] = []
        numbers = folder.numbers()
        live_number = int(live.name) if live is not None else None
        doomed = _doomed(numbers, live_number, keep)
        #: The folder to recycle: the newest generation due for deletion, else the spare.
        self.recycle: Path | None = None
        if doomed:
            self.recycle = folder.generations / str(doomed[-1])
        self.delete_after = [n for n in doomed if n != doomed[-1]] if doomed else []
        if keep <= 0 and live_number is not None:
            self.delete_after.append(live_number)
        spare = prestage.adopt() if prestage is not None else folder.spare().is_dir()
        if self.recycle is None and spare:
            self.recycle = folder.spare()
        elif spare:
            # A spare beside a generation to recycle (a concurrent build's copy) would only
            # keep old files' bytes on disk.
            self.doomed_folders.append(folder.spare())
        self.number = (numbers[-1] if numbers else 0) + 1
        self.path = folder.generations / f".building-{self.number}-{os.getpid()}"
        self.root = str(self.path / "site")
        #: What the staged folder holds now: URL path -> sha256 of the file there.
        self.files: dict[str, str] = {}
        if self.recycle is not None:
            files = read_manifest(self.recycle)["files"]
            if files:
                self.files = {path: entry.get("sha256", "") for path, entry in files.items()}
            else:  # no readable manifest, no way to know what it holds: delete it instead
                self.doomed_folders.append(self.recycle)
                self.recycle = None
        self.opened = False

    def open(self, keep_paths: set[str]) -> None:
        """Take the staged folder (renaming the recycled one) and drop paths not in the plan."""
        if self.opened:
            return
        if self.recycle is not None:
            os.rename(self.recycle, self.path)
        os.makedirs(self.root, exist_ok=True)
        self.opened = True
        self.drop(keep_paths)

    def drop(self, keep_paths: set[str]) -> None:
        """Delete staged files whose paths the new site does not have."""
        for url_path in [p for p in self.files if p not in keep_paths]:
            remove_file(self.root, file_for_path(url_path))
            del self.files[url_path]

    def holds(self, url_path: str, sha256: str) -> bool:
        """Return True when the staged folder already has these bytes at this path."""
        return self.files.get(url_path) == sha256

    def restore(self) -> None:
        """Give a recycled generation back untouched in content (nothing changed after all)."""
        if not self.opened:
            return
        if self.recycle is None:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        # Only deletions can have happened: record them, so the manifest stays the truth.
        old = self.path / MANIFEST_NAME
        manifest = read_manifest(self.path)
        files = manifest.get("files", {})
        manifest["files"] = {path: files[path] for path in self.files if path in files}
        if old.exists():
            write_manifest(self.path, manifest)
        os.rename(self.path, self.recycle)

    def abandon(self) -> None:
        """Delete a half-written generation after a failure (it was never live)."""
        if self.opened or self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)

    def finish(self, manifest: Mapping[str, Any]) -> Path:
        """Write the manifest and give the generation its number (still not live)."""
        write_manifest(self.path, manifest)
        generation = self.folder.generations / str(self.number)
        os.rename(self.path, generation)
        return generation

    def prune(self) -> None:
        """Delete generations beyond BUILD_GENERATIONS_KEPT that were not recycled."""
        for number in self.delete_after:
            shutil.rmtree(self.folder.generations / str(number), ignore_errors=True)
        for path in self.doomed_folders:
            shutil.rmtree(path, ignore_errors=True)
