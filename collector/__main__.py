"""``python -m baomi.collector`` = ``baomi collector`` (for service units and tests)."""

from baomi.collector.cli import collector

collector(prog_name="baomi collector")
