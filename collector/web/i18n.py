"""The dashboard's words in zh-CN (the default: the regulation's language) and English.

One table, one lookup: a page never hard-codes a label, so both languages stay complete (a
unit test checks every key has both).  Clause titles come from the clause catalogue
(``baomi.clauses``: the Chinese title and the English summary), not from here.
"""

from __future__ import annotations

LANGS = ("zh", "en")
DEFAULT = "zh"

WORDS: dict[str, tuple[str, str]] = {
    "app": ("baomi 保密 · 合规中心", "baomi · compliance collector"),
    "login": ("登录", "Log in"),
    "logout": ("退出", "Log out"),
    "user": ("用户名", "User"),
    "password": ("密码", "Password"),
    "wrong_login": ("用户名或密码错误", "Wrong user or password"),
    "fleet": ("总览", "Fleet"),
    "audits": ("定期审计", "Audits"),
    "hosts": ("主机", "Hosts"),
    "host": ("主机", "Host"),
    "last_seen": ("最后联络", "Last seen"),
    "agent": ("代理", "Agent"),
    "agent_health": ("代理状态", "Agent health"),
    "compliance": ("条款合规", "Compliance per clause"),
    "clause": ("条款", "Clause"),
    "title": ("标题", "Title"),
    "compliant": ("合规", "Compliant"),
    "failing": ("不合规", "Failing"),
    "failing_clauses": ("不合规条款", "Failing clauses"),
    "open_alerts": ("待确认告警（在主机页确认）", "Open alerts (acknowledge on the host page)"),
    "delivery": ("送达", "Delivery"),
    "no_admin": (
        "本收集器的运行环境缺少 baomi[admin]（pyinfra），无法通过 SSH 执行离职冻结。",
        "This collector's environment lacks baomi[admin] (pyinfra): it cannot run the freeze "
        "over SSH."),
    "open_by_severity": ("未处理问题（按严重度）", "Open findings by severity"),
    "open": ("未处理", "Open"),
    "acknowledged": ("已确认", "Acknowledged"),
    "resolved": ("已解决", "Resolved"),
    "waived": ("已豁免", "Waived"),
    "waived_by": ("已由 {approver} 豁免，至 {expires}", "waived by {approver} until {expires}"),
    "waiver_expired": ("豁免已于 {expires} 过期（批准人 {approver}），不再豁免",
                       "waiver expired on {expires} (approved by {approver}); no longer waives"),
    "findings": ("问题", "Findings"),
    "timeline": ("问题时间线", "Findings timeline"),
    "controls": ("控制项", "Controls"),
    "control": ("控制项", "Control"),
    "check": ("检查", "Check"),
    "severity": ("严重度", "Severity"),
    "subject": ("对象", "Subject"),
    "expected": ("应为", "Expected"),
    "found": ("实际", "Found"),
    "state": ("状态", "State"),
    "when": ("时间", "When"),
    "event": ("事件", "Event"),
    "ack": ("确认", "Acknowledge"),
    "comment": ("说明", "Comment"),
    "ack_by": ("确认人", "Acknowledged by"),
    "none": ("无", "none"),
    "ok": ("正常", "ok"),
    "no_finding": ("无问题", "no finding"),
    "escrow": ("密钥托管", "Key escrow"),
    "retrieve": ("取回", "Retrieve"),
    "reason": ("原因", "Reason"),
    "secret_id": ("托管条目", "Escrow entry"),
    "escrow_sealed": (
        "已取回并记录（取回记录 {uid}）。条目以离线托管身份密封：请在保存该身份的机器上用 "
        "baomi escrow show 打开。",
        "Retrieved and recorded (retrieval {uid}). The entry is sealed to the offline escrow "
        "identity: open it where that identity is kept (baomi escrow show)."),
    "retrievals": ("取回记录", "Retrievals"),
    "due": ("注销日期", "Deletion due"),
    "enrolled": ("注册时间", "Enrolled"),
    "heartbeat": ("心跳", "Heartbeat"),
    "missing": ("缺失事件", "Missing events"),
    "health": ("健康数据", "Health figures"),
    "reason_required": ("必须填写原因", "A reason is required"),
    "offboarding": ("离职处理", "Offboarding"),
    "new_request": ("新建离职申请", "New offboarding request"),
    "ticket": ("工单号", "Ticket"),
    "effective": ("离职日期", "Effective date"),
    "start": ("提交并冻结", "Submit and freeze"),
    "requests": ("离职申请", "Requests"),
    "request": ("申请", "Request"),
    "created_by": ("提交人", "Created by"),
    "progress": ("各主机进度", "Progress per host"),
    "detail": ("详情", "Detail"),
    "purges": ("月末注销运行", "Purge runs (end of the following month)"),
    "day": ("日期", "Day"),
    "not_configured": (
        "本收集器未配置离职处理的主机清单（collector.toml 中的 offboard_inventory）。",
        "This collector has no offboarding inventory configured (offboard_inventory in "
        "collector.toml)."),
    "forbidden": ("您的角色无权访问此页面", "Your role may not use this page"),
    "not_found": ("未找到", "Not found"),
    "bad_form": ("表单无效或已过期，请重新加载页面", "The form is invalid or expired; reload"),
    "error": ("错误", "Error"),
    "back": ("返回", "Back"),
    "role": ("角色", "Role"),
    "none_yet": ("暂无", "nothing yet"),
    "purge_schedule": ("每日 UTC {hour}:00 运行 baomi offboard --purge-due",
                       "baomi offboard --purge-due runs daily at {hour}:00 UTC"),
}


def lang_of(value: str | None) -> str:
    """A supported language code; anything else is the default."""
    return value if value in LANGS else DEFAULT


def t(lang: str, key: str, **values: object) -> str:
    """The word for ``key`` in ``lang`` (KeyError for an unknown key: a bug, found by tests)."""
    zh, en = WORDS[key]
    text = en if lang == "en" else zh
    return text.format(**values) if values else text
