"""The resident agent (R-FIM, R-LOG): baseline, real-time watch, rules, a durable spool and
shipping to the collector.

It installs on an endpoint with ``baomi[agent]`` only (watchdog, psutil, PyYAML; HTTP is the
standard library's ``http.client`` over ``ssl``): never pyinfra, gevent, testinfra or a web
framework (tests/unit/test_agent_packaging.py keeps it so).  It reuses the policy loader, the
sensitive-path levels and ceilings of :mod:`baomi.controls.sensitive_paths`, the encryption
evidence chain of :mod:`baomi.controls.disk_encryption` and :class:`baomi.findings.Finding`.

Modules: :mod:`.files` (one file's metadata and hash), :mod:`.state` (the baseline DB),
:mod:`.scan` (parallel incremental scans), :mod:`.rules` (pure: state change → findings),
:mod:`.spool` (durable, gap-free, bounded), :mod:`.ship` (to the collector), :mod:`.watch`
(inotify through watchdog), :mod:`.service` (the running agent), :mod:`.cli`.
"""
