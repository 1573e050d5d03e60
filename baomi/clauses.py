"""The clause catalogue: every machine-enforceable clause of the regulation, with a stable ID.

``docs/requirements.md`` carries the same IDs with the source texts they rest on (a unit
test keeps the two equal).  Every control, check, agent rule and finding names one or more
of these IDs, so an auditor can go from a clause to its evidence and back.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Clause:
    """One clause: ID, short Chinese title (as cited in outputs), what it asks, where from."""

    id: str
    title: str
    summary: str
    source: str

    def cite(self) -> str:
        """The form every output uses, e.g. ``R-USB 外部存储设备``."""
        return f"{self.id} {self.title}"


_CATALOGUE = (
    Clause("R-ENC", "加密存储", "Electronic customer data is stored encrypted.",
           "001 §4.2.2, §5.3; 000 bank §3, 范本 第九条(三)"),
    Clause("R-TLS", "加密传输", "Customer data is transmitted encrypted.", "001 §5.3; 000 §5.2"),
    Clause("R-USB", "外部存储设备", "No unauthorised external storage may be connected.",
           "001 §5.2"),
    Clause("R-LOCK", "开机与屏保密码",
           "Computers and servers have a boot password and a screen-saver password.", "001 §5.2"),
    Clause("R-PWD", "密码策略", "Strict password policy; passwords changed regularly.",
           "000 客户信息保密制度 §5.2; 001 §5.2"),
    Clause("R-BAK", "每周二次备份",
           "Besides RAID, a weekly second backup; backups are continuous and kept safe.",
           "000 信息保密管理制度 §8; 范本 第九条(四)"),
    Clause("R-OFF", "离职帐号冻结与注销",
           "On departure the account is frozen at once and deleted at the end of the "
           "following month.", "000 信息保密管理制度 §5"),
    Clause("R-RET", "清退客户资料", "On departure all customer data and media are handed back.",
           "001 §4.2.4"),
    Clause("R-ACL", "最小权限", "Only those whose job needs it may read customer data; "
           "access is tiered by role.", "001 §1.3, §4.2.3; 000 law firm §3.1, company §4.1"),
    Clause("R-CLS", "密级分类", "Customer data is classified in levels and marked; each level "
           "gets its own protection.", "000 范本 第五至七条, 客户信息保密制度 §3; 001 §4.1"),
    Clause("R-LOG", "访问日志与操作审计",
           "Access to and operations on customer data are logged and monitored.",
           "001 §5.3; 000 信息保密管理制度 §6"),
    Clause("R-FIM", "数据完整性",
           "Customer data is not modified, tampered with or destroyed without authorisation.",
           "000 company §3, bank §1"),
    Clause("R-DST", "彻底销毁", "Data no longer needed is destroyed unrecoverably; destruction "
           "is supervised and recorded.", "001 §4.2.4; 000 通用 §5.2.2.2–5.2.2.3"),
    Clause("R-APP", "禁用非指定通讯工具",
           "No personal mail or social software may carry customer data.", "001 §5.4"),
    Clause("R-DEV", "禁存个人设备",
           "No customer data on personal devices or unapproved third-party storage.",
           "001 §4.2.2"),
    Clause("R-SEC", "防火墙与入侵检测",
           "Firewall, intrusion detection and virus protection on systems holding customer "
           "data.", "001 §5.3"),
    Clause("R-INC", "泄密报告与补救", "A suspected leak is reported at once and remedied.",
           "001 §6.1; 000 范本 第十三条"),
    Clause("R-PRV", "权限审批",
           "New accounts and extra permissions need a department head's request and a "
           "senior approval.", "000 信息保密管理制度 §1, §4"),
    Clause("R-AUD", "定期审计", "Regular audits of the regime, results fed back.", "000 目录 §9"),
)

CLAUSES: dict[str, Clause] = {c.id: c for c in _CATALOGUE}


def cite(clause_id: str) -> str:
    """``R-USB`` → ``R-USB 外部存储设备`` (unknown IDs are returned as they are)."""
    clause = CLAUSES.get(clause_id)
    return clause.cite() if clause else clause_id


#: Short English titles (the audit report is bilingual: zh-CN and en, ``baomi audit --lang``).
TITLE_EN: dict[str, str] = {
    "R-ENC": "Encrypted storage", "R-TLS": "Encrypted transmission",
    "R-USB": "External storage devices", "R-LOCK": "Boot and screen-saver passwords",
    "R-PWD": "Password policy", "R-BAK": "Weekly second backup",
    "R-OFF": "Departure: freeze and delete accounts", "R-RET": "Departure: hand back customer data",
    "R-ACL": "Least privilege", "R-CLS": "Classification levels",
    "R-LOG": "Access logging and audit trail", "R-FIM": "Data integrity",
    "R-DST": "Complete destruction", "R-APP": "No unapproved messaging tools",
    "R-DEV": "No customer data on personal devices", "R-SEC": "Firewall and intrusion detection",
    "R-INC": "Leak reporting and remedy", "R-PRV": "Permission approval",
    "R-AUD": "Regular audits",
}
