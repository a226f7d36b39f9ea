"""The spec's `templates_dir` as `watch` sees it: an edited, added or removed partial
changes what nginxgen renders, so it is read again and the result installed (one reload,
reason `templates`). The same look as for certificates (certs.py): contents, not mtimes,
on each wait slice; the directory is listed again each time, so a new file counts too."""

from __future__ import annotations

from pathlib import Path

from .certs import CertificateFiles


class TemplateFiles(CertificateFiles):
    def __init__(self, directory: str | None) -> None:
        self.directory = Path(directory) if directory else None
        super().__init__(())

    def _look(self) -> bytes:
        if self.directory is None:
            return b""
        try:
            self.paths = tuple(sorted(str(p) for p in self.directory.glob("*.j2")))
        except OSError:  # being replaced: the next look decides
            self.paths = ()
        return super()._look() + str(self.directory).encode()
