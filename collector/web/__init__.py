"""The collector's web dashboard (server-rendered, zh-CN and English) and HR's offboarding.

``Dashboard(config, database)`` gives the routes and the background work (offboarding runs,
the daily purge) that ``baomi.collector.app.create_app`` mounts beside the API.
"""

from baomi.collector.web.dashboard import Dashboard

__all__ = ["Dashboard"]
