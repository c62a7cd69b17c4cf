"""The demo's history: a week of earlier test runs and OTA sessions, so trends have a shape.

Everything is recorded through the public API with back-dated timestamps. The numbers come
from a seeded generator: every demo draws the same week (ending at the moment it runs).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from ..apdu import ApduLogWriter
from ..models import CardProfile, CardType, DeviceType, OTASession, SessionStatus, TestStatus
from ..unit_of_work import UnitOfWork

__all__ = ["HISTORY_RUNS", "SUITE", "TESTS", "record_history", "record_run"]

SUITE = "demo_ota_suite"
HISTORY_RUNS = 7  # earlier runs, one a day; the demo's own run is the eighth

MODEM_ID = "EM7455DEMO02"
SECOND_ICCID = "89014103211118510738"

# name -> typical duration in ms. The newest run's outcomes are in _NEWEST.
TESTS = {
    "test_select_isd": 140,
    "test_secure_channel_scp02": 420,
    "test_get_status_load_files": 180,
    "test_install_for_load": 950,
    "test_sms_pp_trigger": 2600,
    "test_bip_open_channel": 1800,
    "test_read_ef_iccid": 90,
    "test_update_ef_plmnsel": 310,
    "test_ota_profile_download": 5200,
    "test_por_counter_check": 260,
}
# The demo's newest run: a regression (get_status_load_files), a fix (update_ef_plmnsel),
# the flaky BIP test failing this time, a skip.
_NEWEST = {
    "test_get_status_load_files": ("failed", "expected 9000, card answered 6A88"),
    "test_bip_open_channel": ("failed", "OPEN CHANNEL: terminal response 0x20 (busy)"),
    "test_sms_pp_trigger": ("skipped", "modem not attached"),
}


def record_run(uow, run_id: str, device_id: str, iccid: str, started: datetime,
               outcomes: dict, rng: random.Random, slowdown: float = 1.0) -> None:
    """One run of the demo suite; ``outcomes`` maps a test name to (status, message)."""
    at = started
    for name, typical in TESTS.items():
        status, message = outcomes.get(name, ("passed", None))
        duration = int(typical * slowdown * rng.uniform(0.85, 1.2))
        uow.tests.create_result(run_id=run_id, suite_name=SUITE, test_name=name,
                                status=TestStatus(status), device_id=device_id,
                                card_iccid=iccid, started_at=at, duration_ms=duration,
                                error_message=message)
        at += timedelta(milliseconds=duration + 40)


def newest_outcomes() -> dict:
    return dict(_NEWEST)


def record_history(manager, device_id: str, iccid: str, now: datetime) -> None:
    """A second device and card, seven earlier daily runs and a week of OTA sessions;
    nothing when the store already has runs of the demo suite (a second demo)."""
    rng = random.Random(15)
    with UnitOfWork(manager) as uow:
        if uow.tests.list_runs(limit=1, suite_name=SUITE):
            return
    with UnitOfWork(manager) as uow:
        uow.devices.register(MODEM_ID, device_type=DeviceType.MODEM, name="Bench modem 2",
                             manufacturer="Sierra Wireless", model="EM7455",
                             firmware_version="SWI9X30C_02.33")
        if not uow.cards.exists(SECOND_ICCID):
            uow.cards.create(CardProfile(iccid=SECOND_ICCID, imsi="310410123456790",
                                         card_type=CardType.UICC,
                                         psk_identity="demo_card_002"))
    for day in range(HISTORY_RUNS, 0, -1):
        started = now - timedelta(days=day, hours=rng.uniform(0, 2))
        outcomes = {}
        if day % 2:  # the flaky test: fails every other night
            outcomes["test_bip_open_channel"] = ("failed", "OPEN CHANNEL: timeout after 5 s")
        if day <= 2:  # broken two nights ago, fixed in the newest run
            outcomes["test_update_ef_plmnsel"] = ("error", "EF PLMNsel: 6982 security status")
        if day == 4:
            outcomes["test_por_counter_check"] = ("failed", "PoR: counter low")
        device = MODEM_ID if day % 3 == 0 else device_id
        card = SECOND_ICCID if device == MODEM_ID else iccid
        with UnitOfWork(manager) as uow:
            record_run(uow, f"demo-night-{day}", device, card, started, outcomes, rng,
                       slowdown=1.0 + (HISTORY_RUNS - day) * 0.04)
    _record_sessions(manager, device_id, iccid, now, rng)


# (device, card, outcome weights) -> sessions per day: the phone with the first card meets
# a bad PoR now and then, with the second card TLS alerts; the modem times out waiting for
# the card's OPEN CHANNEL, mostly with the second card.
_SESSION_MIX = [
    ("phone", "first", [("completed", 8), ("failed:POR", 1)]),
    ("phone", "second", [("completed", 5), ("failed:TLS_ALERT", 2)]),
    ("modem", "first", [("completed", 6), ("timeout:BIP_TIMEOUT", 1)]),
    ("modem", "second", [("completed", 3), ("timeout:BIP_TIMEOUT", 3)]),
]
_FAILURES = {
    "POR": {"error_code": "POR_FAILED", "por_status": "rc-cc-ds-failed",
            "error_message": "PoR: RC/CC/DS failed (wrong KID key?)"},
    "TLS_ALERT": {"error_code": "TLS_ALERT", "tls_alert": "handshake_failure",
                  "tls_alert_code": 40,
                  "error_message": "TLS alert 40 (handshake_failure) from the card"},
    "BIP_TIMEOUT": {"error_code": "BIP_TIMEOUT",
                    "error_message": "no OPEN CHANNEL from the card within 30 s"},
}
_SHORT_EXCHANGE = [
    ("00A4040008A000000151000000", "SELECT ISD", "6F108408A000000151000000A5049F6501FF9000"),
    ("80F24000024F00", "GET STATUS (ISD)", "08A000000151000000019E9000"),
    ("80E2900003DF2000", "STORE DATA", "9000"),
]


def _record_sessions(manager, device_id, iccid, now, rng) -> None:
    devices = {"phone": device_id, "modem": MODEM_ID}
    cards = {"first": iccid, "second": SECOND_ICCID}
    writer = ApduLogWriter(manager, batch_size=500, flush_interval=None)
    with UnitOfWork(manager) as uow:
        for day in range(HISTORY_RUNS, 0, -1):
            for device, card, weights in _SESSION_MIX:
                for _ in range(rng.randint(1, 2)):
                    outcome = rng.choices([w[0] for w in weights],
                                          [w[1] for w in weights])[0]
                    status, _, code = outcome.partition(":")
                    start = now - timedelta(days=day, hours=rng.uniform(2, 20))
                    session = _past_session(uow, devices[device], cards[card], start,
                                            status, code, rng)
                    _log_exchange(writer, session, start, rng, failed=status != "completed")
    writer.close()


def _past_session(uow, device_id, iccid, start, status, code, rng) -> OTASession:
    duration = int(rng.uniform(900, 2400)) if status == "completed" else 30000
    sms = device_id != MODEM_ID  # the phone is woken by SMS-PP, the modem over BIP
    facts = {"por_status": "por-ok"} if sms and status == "completed" else {}
    facts.update(_FAILURES.get(code, {}))
    return uow.sessions.create(OTASession(
        device_id=device_id, card_iccid=iccid, session_type="remote_management",
        status=SessionStatus(status), created_at=start, updated_at=start, started_at=start,
        ended_at=start + timedelta(milliseconds=duration), duration_ms=duration,
        trigger="sms-pp" if sms else "bip", tls_version="TLSv1.2",
        tls_handshake_ms=round(rng.uniform(140, 420), 1),
        tls_cipher_suite="TLS_PSK_WITH_AES_128_CBC_SHA256",
        tls_psk_identity="demo_card_001" if iccid != SECOND_ICCID else "demo_card_002",
        tar="B00010" if sms else None, spi="1621" if sms else None,
        kic="12" if sms else None, kid="12" if sms else None, **facts))


def _log_exchange(writer, session, start, rng, failed: bool) -> None:
    at = start
    exchange = _SHORT_EXCHANGE[:1] if failed else _SHORT_EXCHANGE
    for command, name, response in exchange:
        latency = round(rng.uniform(3, 25), 1)
        writer.command(command, name, timestamp=at, session_id=session.id)
        at += timedelta(milliseconds=latency)
        writer.response(response, latency_ms=latency, timestamp=at, session_id=session.id)
        at += timedelta(milliseconds=5)
