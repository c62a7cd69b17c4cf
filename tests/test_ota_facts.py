"""Schema 0003's OTA session facts through the repositories and record_session: readable
strings in, enum members out; queries by trigger and PoR status; failures by cause."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cardlink_lite import OTASession, ValidationError
from cardlink_lite.cli import cli
from cardlink_lite.models import AdminScriptStatus, PoRStatus, SessionTrigger
from cardlink_lite.recording import record_session
from cardlink_lite.unit_of_work import UnitOfWork


def _session(manager, **kwargs) -> str:
    with UnitOfWork(manager) as uow:
        session = uow.sessions.create_session(**kwargs)
        uow.sessions.start_session(session.id)
    return session.id


def _get(manager, session_id) -> OTASession:
    with UnitOfWork(manager) as uow:
        return uow.sessions.get(session_id)


def test_record_session_stores_every_ota_fact(manager):
    with record_session(manager, session_type="scp80", trigger="sms-pp") as s:
        s.set_tls_info("TLS_PSK_WITH_AES_128_CBC_SHA256", "card_001", version="TLSv1.2",
                       handshake_ms=41.5)
        s.set_scp80(tar="b00001", spi="12 21", kic=0x15, kid=b"\x15", counter=42)
        s.set_por("counter-low")
        s.set_admin_status("SECURITY_ERROR")  # a member's name works too
        s.command("80E60C00", "INSTALL")
        s.response("9000")
    row = _get(manager, s.session_id)
    assert row.trigger is SessionTrigger.SMS_PP
    assert (row.tls_version, row.tls_handshake_ms) == ("TLSv1.2", 41.5)
    assert (row.tar, row.spi, row.kic, row.kid, row.counter) == ("B00001", "1221", "15",
                                                                 "15", 42)
    assert row.por_status is PoRStatus.COUNTER_LOW
    assert row.admin_script_status is AdminScriptStatus.SECURITY_ERROR
    assert (row.tls_alert_code, row.tls_alert) == (None, None)


@pytest.mark.parametrize("alert, stored", [
    ("unknown_psk_identity", (115, "unknown_psk_identity")),
    ("bad record mac", (20, "bad_record_mac")),
    (40, (40, "handshake_failure")),
    ((115, None), (115, "unknown_psk_identity")),
    ("vendor_specific", (None, "vendor_specific")),
])
def test_tls_alert_is_stored_as_code_and_name(manager, alert, stored):
    session_id = _session(manager)
    with UnitOfWork(manager) as uow:
        assert uow.sessions.set_tls_info(session_id, alert=alert)
    row = _get(manager, session_id)
    assert (row.tls_alert_code, row.tls_alert) == stored


@pytest.mark.parametrize("status, member", [
    (0, PoRStatus.POR_OK), (0x02, PoRStatus.COUNTER_LOW), (0x09, PoRStatus.TAR_UNKNOWN),
    ("undefined-security-error", PoRStatus.UNDEFINED_SECURITY_ERROR),
    (PoRStatus.MORE_TIME, PoRStatus.MORE_TIME),
])
def test_por_status_from_value_name_or_status_byte(manager, status, member):
    session_id = _session(manager)
    with UnitOfWork(manager) as uow:
        uow.sessions.set_por(session_id, status)
    assert _get(manager, session_id).por_status is member


@pytest.mark.parametrize("call, message", [
    (lambda r, i: r.set_scp80(i, tar="B001"), "tar must be 3 bytes as 6 hex digits"),
    (lambda r, i: r.set_scp80(i, spi="XYZW"), "spi must be 2 bytes as 4 hex digits"),
    (lambda r, i: r.set_scp80(i, counter=1 << 40), "counter must be an integer from 0"),
    (lambda r, i: r.set_scp80(i), "set_scp80() needs at least one"),
    (lambda r, i: r.set_por(i, 0x0D), "a PoR response status byte is 0x00-0x0C"),
    (lambda r, i: r.set_por(i, "great"), "por_status must be one of por-ok"),
    (lambda r, i: r.set_admin_status(i, "fine"), "admin_script_status must be one of ok"),
    (lambda r, i: r.set_por(i, None), "a PoR status is needed, such as 'por-ok'"),
    (lambda r, i: r.set_admin_status(i, None), "set_admin_status() needs a status such as"),
    (lambda r, i: r.set_trigger(i, None), "set_trigger() needs a trigger such as 'sms-pp'"),
    (lambda r, i: r.set_tls_info(i, handshake_ms=-1), "handshake_ms must be a finite number"),
    (lambda r, i: r.set_tls_info(i, handshake_ms=float("inf")),
     "handshake_ms must be a finite number of milliseconds >= 0; got 'inf'"),
    (lambda r, i: r.set_tls_info(i, handshake_ms="inf"), "handshake_ms must be a finite number"),
    (lambda r, i: r.set_tls_info(i, alert=300), "a TLS alert code is 0-255"),
    (lambda r, i: r.create_session(trigger="pigeon"), "trigger must be one of sms-pp"),
])
def test_bad_ota_facts_are_refused_in_one_line(manager, call, message):
    session_id = _session(manager)
    with UnitOfWork(manager) as uow, pytest.raises(ValidationError) as info:
        call(uow.sessions, session_id)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_setters_answer_false_for_an_unknown_session(manager):
    with UnitOfWork(manager) as uow:
        missing = "00000000-0000-4000-8000-000000000000"
        assert uow.sessions.set_por(missing, "por-ok") is False
        assert uow.sessions.set_scp80(missing, tar="B00001") is False


def test_find_by_trigger_and_por_status(manager):
    first = _session(manager, trigger="sms-pp")
    second = _session(manager, trigger=SessionTrigger.SMS_PP)
    _session(manager, trigger="bip")
    with UnitOfWork(manager) as uow:
        uow.sessions.set_por(first, "counter-low")
        assert {s.id for s in uow.sessions.find_by_trigger("sms-pp")} == {first, second}
        assert len(uow.sessions.find_by_trigger("SMS_PP", limit=1)) == 1
        assert [s.id for s in uow.sessions.find_by_por_status(0x02)] == [first]
        assert uow.sessions.find_by_por_status("por-ok") == []


def test_statistics_break_failures_down_by_cause(manager):
    def failed(**facts):
        session_id = _session(manager)
        with UnitOfWork(manager) as uow:
            if "alert" in facts:
                uow.sessions.set_tls_info(session_id, alert=facts["alert"])
            if "por" in facts:
                uow.sessions.set_por(session_id, facts["por"])
            if "admin" in facts:
                uow.sessions.set_admin_status(session_id, facts["admin"])
            if facts.get("timeout"):
                uow.sessions.timeout_session(session_id)
            else:
                uow.sessions.fail_session(session_id, "X", "failed")

    failed(alert="unknown_psk_identity")
    failed(alert="unknown_psk_identity")
    failed(alert=20)
    failed(por="counter-low")
    failed(por="por-ok", admin="security-error")
    failed(timeout=True)
    failed()
    done = _session(manager)
    with UnitOfWork(manager) as uow:
        uow.sessions.set_por(done, "counter-high")  # completed anyway: not a failure
        uow.sessions.complete_session(done)
        stats = uow.sessions.get_statistics()
    assert stats["failures_by_cause"] == {
        "tls_alert": {"unknown_psk_identity": 2, "bad_record_mac": 1},
        "por_status": {"counter-low": 1},
        "admin_script_status": {"security-error": 1},
        "timeout": 1,
        "other": 1,
    }
    assert stats["by_status"]["failed"] == 6


def test_logs_show_and_stats_show_the_ota_facts(manager, db_url):
    with record_session(manager, session_type="scp81", trigger="push-sms") as s:
        s.set_tls_info("PSK-AES128-CBC-SHA256", "card_001", version="TLSv1.2",
                       handshake_ms=38.4)
        s.set_scp80(tar="000001", spi="1221", kic="01", kid="01", counter=7)
        s.set_por("por-ok")
        s.set_admin_status("ok")
        s.command("80E60C00")
    failed = _session(manager)
    with UnitOfWork(manager) as uow:
        uow.sessions.set_tls_info(failed, alert="unknown_psk_identity")
        uow.sessions.fail_session(failed, "TLS_HANDSHAKE")
    shown = CliRunner().invoke(cli, ["--database", db_url, "logs", "show", s.session_id])
    assert shown.exit_code == 0, shown.output
    assert shown.output.splitlines()[:4] == [
        f"Session {s.session_id}: completed, trigger push-sms, type scp81",
        "TLS: TLSv1.2 PSK-AES128-CBC-SHA256, identity card_001, handshake 38.4 ms",
        "SCP80: TAR 000001, SPI 1221, KIc 01, KID 01, counter 7, PoR por-ok",
        "Admin script status: ok"]
    stats = CliRunner().invoke(cli, ["--database", db_url, "stats"])
    assert stats.exit_code == 0, stats.output
    assert stats.output.splitlines()[-2:] == ["Session failures by cause:",
                                              "  TLS alert unknown_psk_identity: 1"]
    as_json = CliRunner().invoke(cli, ["--database", db_url, "stats", "--json"])
    assert json.loads(as_json.output)["session_failures_by_cause"]["tls_alert"] == {
        "unknown_psk_identity": 1}


def test_demo_records_a_session_with_the_ota_facts(empty_manager, db_url):
    demo = CliRunner().invoke(cli, ["--database", db_url, "demo"])
    assert demo.exit_code == 0, demo.output
    session_id = demo.output.split("Try: cardlink-db logs show ", 1)[1].split()[0]
    row = _get(empty_manager, session_id)
    assert row.trigger is SessionTrigger.PUSH_SMS
    assert (row.tls_version, row.tar, row.counter, row.por_status, row.admin_script_status) \
        == ("TLSv1.2", "000001", 1, PoRStatus.POR_OK, AdminScriptStatus.OK)
    shown = CliRunner().invoke(cli, ["--database", db_url, "logs", "show", session_id])
    assert "SCP80: TAR 000001, SPI 1221, KIc 01, KID 01, counter 1, PoR por-ok" in shown.output
