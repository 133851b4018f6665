"""A directory on any filesystem pyarrow reaches: a local path, or a URI (`file:///`, `s3://`, `gs://`, `hdfs://`).

Checkpoints are written by the learner's rank 0 on its node and listed, loaded and rotated by the controller on
the driver's node; on a multi-node cluster without a shared filesystem, only a URI that both reach works. Every
such access goes through this one API (pyarrow.fs, as Ray Train's storage does), so one `checkpoint.storage`
setting serves a laptop (a path), a shared NFS mount (a path) and a cluster with object storage (a URI).

    store = Storage.at("s3://bucket/segr1/run-a")        # or "/mnt/shared/ckpt/run-a", "file:///tmp/x"
    store.child("step_4").upload(Path("/tmp/staged"))    # every file of a local directory, into step_4/
    [name for name in store.list_dirs()]                  # ["step_2", "step_4"]

Schemes pyarrow lacks (e.g. `memory://`, or `abfs://` with adlfs installed) are reached through fsspec, wrapped
as a pyarrow filesystem. `local` is the plain directory when the filesystem is the local one, so callers may
write there directly (an atomic rename instead of an upload).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs


def _filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    if "://" not in location:  # a plain path: local (or a shared mount), made absolute for the other processes
        return pafs.LocalFileSystem(), str(Path(location).expanduser().resolve())
    try:
        return pafs.FileSystem.from_uri(location)
    except ValueError:  # pyarrow.ArrowInvalid: a scheme pyarrow has no filesystem of its own for; fsspec may
        pass
    import fsspec

    fs, path = fsspec.core.url_to_fs(location)
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


@dataclass(frozen=True)
class Storage:
    """A directory `root` on filesystem `fs` (picklable: it travels to Ray actors as it is)."""

    fs: pafs.FileSystem
    root: str
    location: str  # as the user wrote it, extended by child(): for messages and for other processes

    @classmethod
    def at(cls, location: str) -> Storage:
        fs, root = _filesystem(location)
        root = root.rstrip("/") or "/"
        # a plain path travels absolute: the processes it is handed to may not share this one's working dir
        return cls(fs, root, location.rstrip("/") if "://" in location else root)

    def child(self, name: str) -> Storage:
        return Storage(self.fs, f"{self.root}/{name}", f"{self.location}/{name}")

    @property
    def local(self) -> Path | None:
        """The directory as a local path, when the filesystem is this machine's own."""
        return Path(self.root) if isinstance(self.fs, pafs.LocalFileSystem) else None

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}" if name else self.root

    # ------------------------------------------------------------------------------------------ queries
    def exists(self, name: str = "") -> bool:
        return self.fs.get_file_info(self._path(name)).type != pafs.FileType.NotFound

    def is_file(self, name: str) -> bool:
        return self.fs.get_file_info(self._path(name)).type == pafs.FileType.File

    def is_dir(self, name: str = "") -> bool:
        return self.fs.get_file_info(self._path(name)).type == pafs.FileType.Directory

    def list_dirs(self) -> list[str]:
        """Names of the subdirectories (none when the directory does not exist yet)."""
        if not self.is_dir():
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.root, recursive=False))
        return sorted(info.base_name for info in infos if info.type == pafs.FileType.Directory)

    def list_files(self) -> list[str]:
        if not self.is_dir():
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.root, recursive=False))
        return sorted(info.base_name for info in infos if info.type == pafs.FileType.File)

    # ------------------------------------------------------------------------------------------ bytes
    def read_bytes(self, name: str) -> bytes:
        with self.fs.open_input_stream(self._path(name)) as stream:
            return stream.read()

    def write_bytes(self, name: str, data: bytes) -> None:
        self.fs.create_dir(self.root, recursive=True)
        with self.fs.open_output_stream(self._path(name)) as stream:
            stream.write(data)

    # ------------------------------------------------------------------------------------------ directories
    def delete(self) -> None:
        """Remove the directory and everything in it (nothing happens when it does not exist)."""
        if self.exists():
            self.fs.delete_dir(self.root)

    def upload(self, source: Path) -> None:
        """Copy every file under local directory `source` into this directory (created as needed)."""
        self.fs.create_dir(self.root, recursive=True)
        pafs.copy_files(str(source), self.root, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.fs)

    def download(self, names: list[str], target: Path) -> None:
        """Copy the named files of this directory into local directory `target`."""
        target.mkdir(parents=True, exist_ok=True)
        for name in names:
            pafs.copy_files(self._path(name), str(target / name), source_filesystem=self.fs,
                            destination_filesystem=pafs.LocalFileSystem())
