#!/usr/bin/env python3
"""The demo's dashboard step: log in to a collector's dashboard in headless Chromium from
Debian (Playwright driving /usr/bin/chromium; its own browser download is never used), save
screenshots of the fleet, a host and a clause page (zh-CN, then English), print their paths.

    scripts/demo_dashboard.py URL --user admin --ca CA.pem --out DIR [--host H] [--clause C]
    (the password on stdin)

The collector's certificate comes from its own private CA: the throw-away browser profile does
not hold it, so TLS errors are ignored in the browser after this script has checked the
server's certificate against the pinned CA itself.
"""

from __future__ import annotations

import argparse
import socket
import ssl
import sys
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"


def pinned(url: str, ca: str) -> None:
    """Refuse to send the password anywhere whose certificate the pinned CA did not sign."""
    parts = urlsplit(url)
    context = ssl.create_default_context(cafile=ca)
    context.check_hostname = False  # the address may not be among the names; the CA decides
    with socket.create_connection((parts.hostname or "", parts.port or 443), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=parts.hostname):
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--user", default="admin")
    parser.add_argument("--ca", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--host", default=None)
    parser.add_argument("--clause", default="R-FIM")
    args = parser.parse_args()
    password = sys.stdin.readline().strip()
    try:
        pinned(args.url, args.ca)
    except (OSError, ssl.SSLError) as exc:
        print(f"demo_dashboard: {args.url}: not the pinned collector ({exc})", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    shots: list[Path] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_context(ignore_https_errors=True).new_page()
            page.goto(f"{args.url}/login")
            page.fill("#f-user", args.user)
            page.fill("#f-password", password)
            page.click("#login button")
            page.wait_for_url(f"{args.url}/fleet")
            pages = [("fleet", "/fleet"), ("clause", f"/clauses/{args.clause}")]
            if args.host:
                pages.insert(1, ("host", f"/hosts/{args.host}"))
            for lang in ("zh", "en"):
                page.goto(f"{args.url}/lang/{lang}?next=/fleet")
                for name, path in pages:
                    page.goto(f"{args.url}{path}")
                    shot = args.out / f"{name}-{lang}.png"
                    page.screenshot(path=str(shot), full_page=True)
                    shots.append(shot)
        finally:
            browser.close()
    print(f"logged in to {args.url} as {args.user}; screenshots:")
    for shot in shots:
        print(f"  {shot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
