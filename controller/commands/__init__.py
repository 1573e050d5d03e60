"""The controller's click commands, one module per command (group), loaded by ``baomi.cli``."""
