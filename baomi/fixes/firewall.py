"""R-SEC fixes: the ruleset file, checked by ``nft -c`` before it replaces anything, then loaded."""

from __future__ import annotations

import shlex

from baomi.controls.firewall import CONF, SERVICE
from baomi.fixes.install import install_file


def load_script(conf: str) -> str:
    """Install the ruleset file only if ``nft -c`` accepts it, then load it with ``nft -f``.

    The file replaces baomi's table in one transaction (see :mod:`baomi.controls.firewall`), so
    the host is never without rules and never holds half a ruleset.
    """
    return install_file(CONF, conf, mode="0755", validate="nft -c -f {new}",
                        then=f"nft -f {shlex.quote(CONF)}")


ENABLE_BOOT_SERVICE = f"systemctl enable {SERVICE}"
