"""Pretrained weights: where they come from, the local cache, verified downloads.

A ``Weights`` record pins one published file by URL and checksum. ``fetch``
returns the cached file, downloading (or copying, for ``--from FILE``) it first
when needed; every file is checked against the published hash before it lands
in the cache, and the write is atomic (temp file in the cache folder, then
``os.replace``), so a crash, a truncated download or a wrong file never leaves
something in the cache that a later run would trust.

The cache is ``$AUTODL_HOME/weights`` when ``AUTODL_HOME`` is set, otherwise
``$XDG_CACHE_HOME/autodl/weights`` (``~/.cache/autodl/weights``). Nothing here
imports TensorFlow: the CLI uses it to list and pull weights.

Example:

>>> w = Weights(url="https://example.org/tiny.h5", file_hash="0" * 64, filename="tiny.h5",
...             source="demo", licence="CC0")
>>> w.hash_algorithm
'sha256'
>>> cached_path(w).name
'tiny.h5'
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Optional

from autodl.errors import UserError

__all__ = ["Weights", "cache_dir", "cached_path", "fetch", "file_digest", "is_cached", "load_pretrained"]

# Big enough that Python overhead is negligible, small enough for a smooth progress bar.
CHUNK_BYTES = 1 << 20

Progress = Callable[[int, Optional[int]], None]


@dataclass(frozen=True)
class Weights:
    """One published weights file, pinned by URL and checksum.

    Attributes:
        url: where the file is published (http, https or file URL).
        file_hash: hex digest of the file; 64 characters is SHA-256, 32 is MD5
            (Keras publishes MD5 for some of its applications).
        filename: the name in the cache; its suffix tells Keras the format
            (``.h5`` legacy order-based weights, ``.weights.h5`` Keras 3).
        source: what the weights were trained on and who published them.
        licence: the licence the weights are published under.

    Example:

    >>> Weights("file:///tmp/w.h5", "d41d8cd98f00b204e9800998ecf8427e", "w.h5", "demo", "MIT").hash_algorithm
    'md5'
    """

    url: str
    file_hash: str
    filename: str
    source: str
    licence: str

    def __post_init__(self) -> None:
        digest = self.file_hash.lower()
        if len(digest) not in (32, 64) or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"file_hash must be a 32 (md5) or 64 (sha256) hex digest, got {self.file_hash!r}")
        object.__setattr__(self, "file_hash", digest)
        if not self.filename or Path(self.filename).name != self.filename:
            raise ValueError(f"filename must be a bare file name, got {self.filename!r}")

    @property
    def hash_algorithm(self) -> str:
        """``"sha256"`` or ``"md5"``, from the digest's length (as Keras' ``get_file`` does)."""
        return "sha256" if len(self.file_hash) == 64 else "md5"

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "file_hash": self.file_hash,
            "hash_algorithm": self.hash_algorithm,
            "filename": self.filename,
            "source": self.source,
            "licence": self.licence,
        }


def cache_dir() -> Path:
    """The weights cache folder (not created here).

    Example:

    >>> cache_dir().name
    'weights'
    """
    home = os.environ.get("AUTODL_HOME")
    if home:
        return Path(home).expanduser() / "weights"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "autodl" / "weights"


def cached_path(weights: Weights) -> Path:
    """Where ``weights`` lives in the cache (whether or not it is there yet)."""
    return cache_dir() / weights.filename


def is_cached(weights: Weights, *, verify: bool = False) -> bool:
    """Whether the file is in the cache; ``verify=True`` also checks its hash (reads the whole file)."""
    path = cached_path(weights)
    if not path.is_file():
        return False
    return not verify or file_digest(path, weights.hash_algorithm) == weights.file_hash


def file_digest(path: str | os.PathLike[str], algorithm: str) -> str:
    """Hex digest of a file, read in chunks.

    Example:

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "empty"
    >>> _ = p.write_bytes(b"")
    >>> file_digest(p, "md5")
    'd41d8cd98f00b204e9800998ecf8427e'
    """
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def fetch(
    name_or_weights: str | Weights,
    source: str | os.PathLike[str] | None = None,
    *,
    timeout: float = 60,
    on_progress: Progress | None = None,
) -> Path:
    """Returns the verified cached weights file, downloading or copying it first if needed.

    Args:
        name_or_weights: a zoo entry name (its card's ``pretrained``) or a ``Weights``.
        source: where to get the file when it is not cached: a local path or an
            http(s)/file URL; default the published URL.
        timeout: seconds to wait for the server to connect or send data.
        on_progress: called as ``on_progress(bytes_done, total_or_None)`` while copying.

    Raises:
        UserError: unknown entry, entry without weights, unreachable source,
            truncated download or checksum mismatch; nothing partial or unverified
            is left in the cache.

    Example:

    Downloads about 4 MB the first time:

    >>> path = fetch("mobilenet_v3_small")  # doctest: +SKIP
    >>> path.name  # doctest: +SKIP
    'weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5'
    """
    weights, label = _resolve(name_or_weights)
    target = cached_path(weights)
    if target.is_file():
        if file_digest(target, weights.hash_algorithm) == weights.file_hash:
            return target
        # Corrupted on disk or replaced by hand: never trust it, fetch again.
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    where = str(source) if source is not None else weights.url
    # The temp file sits next to the target so os.replace is an atomic rename.
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{weights.filename}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _copy(where, out, weights, label, timeout, on_progress)
        if digest != weights.file_hash:
            raise UserError(
                f"checksum mismatch for {label} weights from {where}: expected {weights.hash_algorithm} "
                f"{weights.file_hash}, got {digest}; the file is corrupted or not the published one, "
                f"run 'autodl zoo pull {label}' again or pass the right file with --from"
            )
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def load_pretrained(model: Any, entry_name: str, source: str | os.PathLike[str] | None = None) -> Path:
    """Fetches ``entry_name``'s weights and loads them into ``model``; returns the weights path.

    ``model`` must be the entry's backbone (``get(entry_name).build(...)``).
    Keras-Applications no-top files are legacy ``.h5`` files that load by
    layer order, which the backbones keep (preprocessing layers added in front
    carry no weights), at any input size.

    Example:

    >>> from autodl.zoo import get
    >>> backbone = get("mobilenet_v3_small").build((160, 160, 3))  # doctest: +SKIP
    >>> load_pretrained(backbone, "mobilenet_v3_small")  # doctest: +SKIP
    """
    path = fetch(entry_name, source)
    try:
        model.load_weights(path)
    except ValueError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"{path} does not fit the {entry_name} backbone ({first}); "
            f"build the model with autodl.zoo.get({entry_name!r}).build(...)"
        ) from e
    return path


def _resolve(name_or_weights: str | Weights) -> tuple[Weights, str]:
    """The ``Weights`` and a label for messages (the entry name when there is one)."""
    from autodl.zoo.registry import get, list_entries

    if isinstance(name_or_weights, Weights):
        names = [e.card.name for e in list_entries() if e.card.pretrained == name_or_weights]
        return name_or_weights, names[0] if names else "NAME"

    try:
        entry = get(name_or_weights)
    except KeyError as e:
        raise UserError(f"{e.args[0]}; see 'autodl zoo list'") from None
    if entry.card.pretrained is None:
        raise UserError(f"zoo entry {name_or_weights!r} has no pretrained weights: it is trained from scratch")
    return entry.card.pretrained, name_or_weights


def _copy(where: str, out: IO[bytes], weights: Weights, label: str, timeout: float, on_progress: Progress | None) -> str:
    """Streams ``where`` into ``out``; returns the hex digest. Raises ``UserError`` on any failure."""
    hasher = hashlib.new(weights.hash_algorithm)
    # The message already names `where`; repeat the published URL only when it is a different one.
    what = "it" if where == weights.url else weights.url
    offline_hint = f"download {what} elsewhere and run 'autodl zoo pull {label} --from FILE'"
    stream, total = _open(where, timeout, offline_hint)
    done = 0
    try:
        with stream:
            while True:
                chunk = stream.read(CHUNK_BYTES)
                if not chunk:
                    break
                out.write(chunk)
                hasher.update(chunk)
                done += len(chunk)
                if on_progress is not None:
                    on_progress(done, total)
    except (OSError, http.client.HTTPException) as e:
        # Connection reset, timeout mid-body, disk full...: the partial file is discarded by the caller.
        raise UserError(f"reading {where} failed after {done} bytes ({_reason(e)}); {offline_hint}") from e
    # http.client returns b"" when the server closes early instead of raising, so count.
    if total is not None and done != total:
        raise UserError(
            f"download of {where} is truncated: got {done} of {total} bytes; try again or {offline_hint}"
        )
    return hasher.hexdigest()


def _open(where: str, timeout: float, offline_hint: str) -> tuple[Any, int | None]:
    """A readable binary stream for a path or URL, and its size when known."""
    scheme = urllib.parse.urlsplit(where).scheme.lower()
    if scheme in ("http", "https", "file"):
        request = urllib.request.Request(where, headers={"User-Agent": "autodl"})
        try:
            response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310  (scheme checked above)
        except urllib.error.HTTPError as e:
            raise UserError(f"cannot download {where}: HTTP {e.code} {e.reason}; {offline_hint}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
            if scheme == "file":
                raise UserError(f"cannot read {where} ({_reason(e)}); check the path") from None
            raise UserError(f"cannot reach {where} ({_reason(e)}); offline? {offline_hint}") from None
        length = response.headers.get("Content-Length")
        return response, int(length) if length and length.isdigit() else None
    if scheme and len(scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise UserError(f"cannot fetch {where}: only local paths and http, https or file URLs are supported")
    path = Path(where).expanduser()
    if not path.is_file():
        raise UserError(f"{path} is not a file; pass the downloaded weights file with --from")
    return open(path, "rb"), path.stat().st_size


def _reason(e: BaseException) -> str:
    reason = getattr(e, "reason", None) or e
    return str(reason).strip().splitlines()[0] if str(reason).strip() else type(e).__name__
