"""`kvprobe report --front-matter` read as Hugo reads it: a page bundle built by Debian's `hugo`
(scripts/setup-cpu.sh installs it) into a site with the smallest layouts a theme would give. The
site builds without warnings, the page shows its chart images from its own bundle, and has one title."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import kvprobe

DATA = Path(__file__).parent / "data" / "results"
HUGO = shutil.which("hugo")
# A theme's page and list layouts, reduced to what a post shows: its title once, then its content.
LAYOUTS = {
    "_default/baseof.html": '<!DOCTYPE html><html><body>{{ block "main" . }}{{ end }}</body></html>',
    "_default/single.html": '{{ define "main" }}<h1>{{ .Title }}</h1>{{ .Content }}{{ end }}',
    "_default/list.html": (
        '{{ define "main" }}{{ range .Pages }}<a href="{{ .RelPermalink }}">{{ .Title }}</a>{{ end }}{{ end }}'
    ),
}

pytestmark = pytest.mark.skipif(
    HUGO is None and not os.environ.get("CI"), reason="Debian's hugo package is not installed (scripts/setup-cpu.sh)"
)


def site(root: Path, *report_args: str) -> Path:
    """A Hugo site whose one post is kvprobe's report of the test data, written straight into the bundle."""
    (root / "config.toml").write_text('baseURL = "https://example.org/"\ntitle = "blog"\n')
    for name, text in LAYOUTS.items():
        (root / "layouts" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "layouts" / name).write_text(text)
    bundle = root / "content" / "posts" / "kv-report"
    kvprobe("report", str(DATA), "--out", str(bundle), "--front-matter", "--date", "2026-11-26", *report_args)
    return bundle


def hugo(root: Path, *args: str) -> subprocess.CompletedProcess:
    assert HUGO is not None
    return subprocess.run(
        [HUGO, "--source", str(root), "--panicOnWarning", "--printPathWarnings", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_report_is_a_page_bundle_that_hugo_builds_without_warnings(tmp_path):
    bundle = site(tmp_path, "--title", "KV cache: a test post", "--tags", "vllm,testing")
    assert (bundle / "index.md").is_file() and not (bundle / "report.md").exists()
    done = hugo(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "WARN" not in done.stdout + done.stderr, done.stdout + done.stderr
    page = (tmp_path / "public" / "posts" / "kv-report" / "index.html").read_text()
    assert page.count("<h1") == 1 and "<h1>KV cache: a test post</h1>" in page  # the theme's title, not a second
    images = re.findall(r'<img src="([^"]+)"', page)
    assert images and all(not src.startswith(("/", "http")) for src in images)
    for src in images:  # each image the page shows is published beside it, from the bundle
        assert (tmp_path / "public" / "posts" / "kv-report" / src).is_file(), src
    assert "/tmp/" not in page and '{"' not in page  # no machine paths or JSON blobs in the prose
    tags = tmp_path / "public" / "tags"
    assert sorted(p.name for p in tags.iterdir() if p.is_dir()) == ["testing", "vllm"]


def test_a_draft_is_built_only_when_drafts_are_asked_for(tmp_path):
    site(tmp_path, "--draft")
    post = tmp_path / "public" / "posts" / "kv-report" / "index.html"
    assert hugo(tmp_path).returncode == 0 and not post.exists()
    assert hugo(tmp_path, "--buildDrafts").returncode == 0 and post.exists()
