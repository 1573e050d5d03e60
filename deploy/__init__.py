"""pyinfra deploys: one thin module per control, ``baseline.py`` applying them all.

Each module turns its control's ``desired`` state (from ``baomi.controls``) into pyinfra
operations; every operation's name starts with ``[control]`` so ``baomi apply`` can report
host × control.
"""
