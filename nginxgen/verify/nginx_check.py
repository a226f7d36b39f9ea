"""`nginx -t` on a candidate config, its messages turned into findings."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from ..deploy.nginx_bin import Binary, test_config
from .findings import Finding


def nginx_test(text: str, binary: Binary) -> list[Finding]:
    """`nginx -t` on a temporary copy, so a bad config never touches the real path."""
    tmp = Path(tempfile.mkdtemp(prefix="nginxgen-test-"))
    try:
        conf = tmp / "nginx.conf"
        conf.write_text(text, encoding="utf-8")
        result = test_config(binary, conf)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if result.ok:
        return []
    findings = []
    for line in result.output.splitlines():
        if not line.strip() or line.endswith("test failed"):
            continue
        at = re.search(re.escape(str(conf)) + r":(\d+)", line)
        message = line.replace(f" in {conf}:{at.group(1)}" if at else str(conf), "")
        message = re.sub(r"^nginx: \[(\w+)\] |^\S+ \S+ \[(\w+)\] \d+#\d+: ", "", message)
        findings.append(Finding("nginx -t", message, int(at.group(1)) if at else None))
    return findings or [Finding("nginx -t", "nginx -t failed without saying why")]
