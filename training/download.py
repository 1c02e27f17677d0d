"""`main.py weights`: the public SSD300 checkpoints, downloaded, verified and converted.

A download goes to `.NAME.partial.EXT` in the cache folder (resumed with an HTTP Range request
where the server allows it), its SHA-256 is checked, and only then is it renamed to its
final name and converted by training.importers into a self-describing .safetensors file
beside it. Network failures and Ctrl-C keep the .partial file, so running the same command
again continues where it stopped. `.pth` files are only read by `read_checkpoint`
(torch.load with weights_only=True): nothing in them is executed.

torch is imported only to convert: `weights list` and the downloads work without it.

Over 400 lines on purpose: about a quarter is the catalogue of known checkpoints
(URLs, digests, sizes, where each comes from).
"""

from __future__ import annotations

import http.client
import re
import shlex
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from training import fileio
from training.errors import SSDError, WeightsError
from training.fileio import partial_path, sha256_file

CHUNK = 1 << 16
USER_AGENT = "ssd300-toolchain (main.py weights)"


class DownloadError(SSDError):
    """A download that failed (network, HTTP status) or whose checksum does not match."""


@dataclass(frozen=True)
class KnownCheckpoint:
    """A public checkpoint that training.importers converts.

    Attributes:
        kind: the importer (a key of training.importers.KINDS).
        sha256 / sha256_prefix: the full digest, or only its published prefix; None for
            both when no digest is published (the download is then not verified).
        size: exact size in bytes where known; approx_mb: for the listing.
        converts: False when the .pth itself is the product (a backbone for training).
    """

    name: str
    url: str
    kind: str
    description: str
    sha256: str | None = None
    sha256_prefix: str | None = None
    size: int | None = None
    approx_mb: float | None = None
    converts: bool = True

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def expected_sha256(self) -> str | None:
        return self.sha256 or self.sha256_prefix


KNOWN = {
    c.name: c
    for c in (
        KnownCheckpoint(
            name="ssd300_vgg16_coco",
            url="https://download.pytorch.org/models/ssd300_vgg16_coco-b556d3b4.pth",
            kind="torchvision-ssd300",
            description="torchvision's SSD300-VGG16 trained on COCO 2017 (80 classes, box mAP "
            "25.1): a detector for video/gui",
            # Full SHA-256 as pinned by two independent public projects: a LibreYOLO weights
            # publishing script (_UPSTREAM_SHA256 of ssd300_vgg16_coco-b556d3b4.pth) and a
            # research report's pin table ("SSD300 VGG16 COCO_V1"); it begins with the
            # b556d3b4 of torchvision's file name.
            sha256="b556d3b43ab6c3f63d81bfb8835fe8756ac22da664357da100dccf96b6a6b42d",
            approx_mb=143,  # 35,641,826 FP32 parameters
        ),
        KnownCheckpoint(
            name="ssd300_vgg16_voc",
            url="https://s3.amazonaws.com/amdegroot-models/ssd300_mAP_77.43_v2.pth",
            kind="ssd-pytorch",
            description="ssd.pytorch's SSD300-VGG16 trained on VOC07+12 (20 classes, VOC2007 "
            "test mAP 77.43): a detector for video/gui",
            # No SHA-256 of this file was found in public code, and its name carries none:
            # it is downloaded unverified unless --sha256 is given (the importer still
            # checks every tensor name and shape, and nothing in it is unpickled).
            approx_mb=105,  # 26,285,486 FP32 parameters
        ),
        KnownCheckpoint(
            name="vgg16_imagenet",
            url="https://download.pytorch.org/models/vgg16-397923af.pth",
            kind="torchvision-vgg16",
            description="torchvision's ImageNet VGG16, the backbone start for training: "
            "main.py create/train --backbone vgg16 --backbone-weights FILE",
            # Full SHA-256 pinned identically by several independent public projects (Disco
            # Diffusion's model downloader, which checks it with hashlib; LPIPS/DISTS metric
            # asset pins; a RAFT pipeline constant); it begins with the 397923af of the file
            # name. Size from two of them, matching torchvision's _file_size 527.796 (MiB).
            sha256="397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
            size=553_433_881,
            converts=False,
        ),
    )
}


def cache_dir(override: str | Path | None = None) -> Path:
    """--dir, else $SSD300_CACHE/weights, else ~/.cache/ssd300/weights."""
    return fileio.cache_dir("weights", override)


def checkpoint(name: str) -> KnownCheckpoint:
    if name not in KNOWN:
        raise DownloadError(f"unknown checkpoint {name!r}; known: {', '.join(KNOWN)}")
    return KNOWN[name]


def digest_matches(digest: str, expected: str | None) -> bool:
    """Whether a hex digest is `expected` (a full digest or a prefix); True without one."""
    return expected is None or digest.lower().startswith(expected.lower())


def download(
    url: str,
    dest: str | Path,
    sha256: str | None = None,
    timeout: float = 30.0,
    progress: bool | None = None,
) -> str:
    """Downloads `url` to `dest` through its partial file (fileio.partial_path), resuming it
    if it exists.

    Args:
        sha256: the expected hex digest (or a prefix of it); None skips the check.
        timeout: seconds to wait for the connection and for each read.
        progress: a tqdm bar on stderr; default: when stderr is a terminal.
    Returns:
        The SHA-256 of the file, now at `dest`.
    Raises:
        DownloadError: network or HTTP failure (the .partial is kept for resuming), or a
            checksum mismatch (the download is deleted).
    """
    dest = Path(dest)
    if not url.lower().startswith(("http://", "https://")):
        raise DownloadError(f"not an http(s) URL: {url}")
    partial = partial_path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    offset = partial.stat().st_size if partial.is_file() else 0
    print(
        f"downloading {url} -> {dest}" + (f" (resuming after {_mb(offset)})" if offset else ""),
        file=sys.stderr,
    )
    response, offset = _open(url, offset, timeout, partial)
    if response is not None:
        show = sys.stderr.isatty() if progress is None else progress
        with response:
            _receive(response, partial, offset, url, dest.name if show else None)
    digest = sha256_file(partial)
    if not digest_matches(digest, sha256):
        partial.unlink(missing_ok=True)
        raise DownloadError(
            f"SHA-256 mismatch for {dest.name} from {url}: expected {sha256}, got {digest}; "
            "the download was deleted"
        )
    fileio.finalize(partial, dest)
    return digest


def _open(url: str, offset: int, timeout: float, partial: Path):
    """(response, offset to write at), asking for the bytes from `offset` on; (None, offset)
    when the server says the partial file is already complete."""
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout
        )
    except urllib.error.HTTPError as e:
        total = _content_range(e.headers.get("Content-Range"))[2] if e.headers else None
        e.close()
        if e.code == 416 and offset:  # nothing left after `offset`: complete, or not this file
            if total == offset:
                return None, offset
            partial.unlink(missing_ok=True)
            return _open(url, 0, timeout, partial)
        raise DownloadError(f"cannot download {url}: HTTP {e.code} {_one_line(e.reason)}") from None
    except (OSError, http.client.HTTPException) as e:
        raise DownloadError(f"cannot download {url}: {_reason(e, timeout)}") from None
    if offset:
        start = _content_range(response.headers.get("Content-Range"))[0]
        if response.status != 206 or start != offset:
            print("note: the server does not resume downloads; starting again", file=sys.stderr)
            if response.status != 200:  # a 206 for other bytes than asked for
                response.close()
                partial.unlink(missing_ok=True)
                return _open(url, 0, timeout, partial)
            return response, 0
    return response, offset


def _receive(response, partial: Path, offset: int, url: str, progress: str | None) -> None:
    """Appends the body to `partial` (from `offset`; 0 truncates it), showing a progress bar
    named `progress` unless that is None."""
    length = response.headers.get("Content-Length", "")
    total = offset + int(length) if length.isdigit() else None
    done = offset
    bar = None
    if progress is not None:
        from tqdm import tqdm

        bar = tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=progress,
            file=sys.stderr,
        )
    try:
        with open(partial, "ab" if offset else "wb") as f:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as e:
                    raise DownloadError(
                        f"download of {url} interrupted after {_mb(done, total)} "
                        f"({_reason(e)}); run the same command again to resume"
                    ) from None
                if not chunk:
                    break
                f.write(chunk)
                done += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
    except KeyboardInterrupt:
        print(
            f"kept {partial} ({_mb(done)}): run the same command again to resume", file=sys.stderr
        )
        raise
    finally:
        if bar is not None:
            bar.close()
    if total is not None and done < total:
        raise DownloadError(
            f"download of {url} interrupted after {_mb(done, total)} (the connection closed); "
            "run the same command again to resume"
        )


def _content_range(header: str | None) -> tuple[int | None, int | None, int | None]:
    """(start, end, total) of a Content-Range header such as 'bytes 10-99/100' or 'bytes */100'."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*", header or "")
    if not m:
        return None, None, None
    start, end, total = (int(g) if g and g != "*" else None for g in m.groups())
    return start, end, total


def _reason(e: BaseException, timeout: float | None = None) -> str:
    if isinstance(e, urllib.error.URLError) and not isinstance(e.reason, str):
        e = e.reason
    if isinstance(e, TimeoutError):
        return "timed out" + (f" (no answer within {timeout:g} s)" if timeout else "")
    if isinstance(e, http.client.IncompleteRead):
        return "the connection closed early"
    if isinstance(e, OSError) and e.strerror:
        return _one_line(e.strerror)
    return _one_line(str(e) or type(e).__name__)


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _mb(n: int, total: int | None = None) -> str:
    return f"{n / 1e6:.1f} MB" + (f" of {total / 1e6:.1f} MB" if total else "")


# ------------------------------------------------------------------------- the command


@dataclass(frozen=True)
class Fetched:
    """What `get` produced: the verified download and, for detectors, the converted file."""

    entry: KnownCheckpoint
    checkpoint: Path
    weights: Path | None
    summary: str = ""  # of the converted detector, when converted now


def paths(entry: KnownCheckpoint, folder: Path) -> tuple[Path, Path | None]:
    """(downloaded checkpoint, converted weights file or None) of an entry in `folder`."""
    converted = folder / f"{entry.name}.safetensors" if entry.converts else None
    return folder / entry.filename, converted


def get(
    name: str,
    folder: str | Path | None = None,
    url: str | None = None,
    sha256: str | None = None,
    force: bool = False,
    timeout: float = 30.0,
) -> Fetched:
    """Downloads (unless already there), verifies and converts a known checkpoint.

    Args:
        url: a mirror to download from instead of the entry's URL (same file expected).
        sha256: the digest to check instead of the entry's (a prefix of >= 8 digits works).
        force: download and convert again even if the files exist.
    """
    entry = checkpoint(name)
    folder = cache_dir(folder)
    pth, converted = paths(entry, folder)
    expected = sha256 or entry.expected_sha256
    if force:  # the old files are replaced only once the new ones are complete
        partial_path(pth).unlink(missing_ok=True)
    elif converted is not None and converted.is_file():
        return Fetched(entry, pth, converted)
    digest = sha256_file(pth) if pth.is_file() and not force else None
    if digest is not None and not digest_matches(digest, expected):
        print(f"note: {pth} does not match its SHA-256; downloading it again", file=sys.stderr)
        digest = None
    if digest is None:
        digest = download(url or entry.url, pth, expected, timeout)
    print(f"{pth.name}: SHA-256 {digest} ({_verification(expected)})")
    if not entry.converts:
        _check_kind(entry, pth)
        return Fetched(entry, pth, None)
    from training.importers import import_checkpoint
    from training.weights import save_detector

    model = import_checkpoint(pth, entry.kind)
    save_detector(model, converted)
    s = model.spec
    summary = (
        f"SSD300-{s.backbone}, {len(s.class_names)} classes, priors {s.priors.preset}, "
        f"{s.priors.num_boxes} default boxes"
    )
    return Fetched(entry, pth, converted, summary)


def _verification(expected: str | None) -> str:
    if expected is None:
        return "NOT verified: no published SHA-256; compare it with a trusted source"
    if len(expected) < 64:
        return f"verified: only the prefix {expected} is known"
    return "verified"


def _check_kind(entry: KnownCheckpoint, pth: Path) -> None:
    """A product kept as .pth must at least be a readable checkpoint of the right kind."""
    from training.importers import detect_kind, read_checkpoint

    kind = detect_kind(read_checkpoint(pth))
    if kind != entry.kind:
        raise WeightsError(f"{pth}: not a {entry.kind} checkpoint (looks like {kind})")


def describe_use(fetched: Fetched) -> list[str]:
    """How to use what `get` produced, as printed after it."""
    if fetched.weights is not None:
        q = shlex.quote(str(fetched.weights))
        if fetched.summary:
            done = f"wrote {fetched.weights}: {fetched.summary}"
        else:
            done = f"already converted: {fetched.weights} (--force converts it again)"
        return [
            done,
            "use it with:",
            f"  main.py video IN -m {q}",
            f"  main.py gui -m {q}",
        ]
    q = shlex.quote(str(fetched.checkpoint))
    return [
        f"ready: {fetched.checkpoint} (an ImageNet backbone for training; kept as .pth)",
        "use it with:",
        f"  main.py create --backbone vgg16 --backbone-weights {q} -o ssd300_vgg16.safetensors",
        f"  main.py train --backbone vgg16 --backbone-weights {q} --data DATA ...",
    ]


def status(entry: KnownCheckpoint, folder: Path) -> str:
    """Whether an entry is converted, downloaded, partly downloaded or absent, and where."""
    pth, converted = paths(entry, folder)
    partial = partial_path(pth)
    if converted is not None and converted.is_file():
        return f"converted: {converted}"
    if pth.is_file():
        return f"downloaded: {pth}" + (" (not converted yet)" if converted else "")
    if partial.is_file():
        return f"partial, {_mb(partial.stat().st_size)}: `get` resumes it"
    return "not downloaded"


def list_text(folder: str | Path | None = None) -> str:
    """The table of `main.py weights list`."""
    folder = cache_dir(folder)
    rows = [("NAME", "SIZE", "SHA-256", "STATUS")]
    details = []
    for e in KNOWN.values():
        size = f"{e.size / 1e6:.0f} MB" if e.size else f"~{e.approx_mb:.0f} MB"
        check = "full" if e.sha256 else f"prefix {e.sha256_prefix}" if e.sha256_prefix else "none!"
        rows.append((e.name, size, check, status(e, folder)))
        details.append((e.description, e.url))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"cache folder: {folder} (change it with --dir or $SSD300_CACHE)", ""]
    for i, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[3])
        if i:
            lines += [f"    {details[i - 1][0]}", f"    {details[i - 1][1]}"]
    unverified = [e.name for e in KNOWN.values() if e.expected_sha256 is None]
    if unverified:
        lines += [
            "",
            f"none!: no SHA-256 of {', '.join(unverified)} is published; its download is not "
            "verified (give --sha256 HEX if you have a trusted one)",
        ]
    lines += ["", "download, verify and convert one: main.py weights get NAME"]
    return "\n".join(lines)
