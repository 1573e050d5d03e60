"""The collector: where every finding ends up (ingest, enrolment, findings API).

A room of its own (installed as ``baomi.collector``); it needs the ``collector`` extra
(starlette, uvicorn, psycopg, cryptography). Its API is described in docs/collector-api.md.
"""
